"""Files under the storage URI: a local path or any pyarrow filesystem URI.

pyarrow's filesystems cover local, S3, GCS and HDFS with one interface, so the
embedded default (files under PLATFORM_HOME) and a cluster (s3://...) share code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.fs as pafs

from mlplatform.errors import InputError

_CHUNK = 1 << 20


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A URI or local path -> (filesystem, path inside it)."""
    try:
        if "://" not in uri:
            return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
        return pafs.FileSystem.from_uri(uri)
    except (pafs.ArrowInvalid, ValueError, OSError) as exc:  # type: ignore[attr-defined]
        raise InputError(f"cannot open storage location {uri!r}: {exc}") from None


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    """Content hash of one file, streamed: never the whole file in memory."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(fs: pafs.FileSystem, path: str, suffixes: tuple[str, ...]) -> list[pafs.FileInfo]:
    """The files at `path` (a file, or a folder searched recursively) with one of the suffixes."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(path)
    if info.type == pafs.FileType.File:
        return [info]
    selector = pafs.FileSelector(path, recursive=True)
    found = [
        f
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.base_name.endswith(suffixes)
        and not f.base_name.startswith((".", "_"))
    ]
    return sorted(found, key=lambda f: f.path)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound
