"""Files under the storage URI: a local path or any pyarrow filesystem URI.

pyarrow's filesystems cover local, S3, GCS and HDFS with one interface, so the
embedded default (files under PLATFORM_HOME) and a cluster (s3://...) share code.

Object stores cannot rename a folder, and a Ray task on another node cannot see the
driver's disk, so nothing here moves a directory: a single file is published by one
atomic put (`publish_file`), and a folder of parts by a manifest (mlplatform.manifest).

An `s3://` URI gets its endpoint, region and credentials from its query string
(`?endpoint_override=http://host:9000&scheme=http&region=...`) or else from the
standard AWS variables of the process that resolves it (AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). They are copied into the filesystem
object itself, so a filesystem the driver resolved and handed to Ray tasks (pickled)
reaches the same server with the same credentials on any node, whatever that node's
environment holds. Without keys in the environment the AWS default chain (instance
profile, ~/.aws) applies where the filesystem is used.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from mlplatform.errors import InputError

_CHUNK = 1 << 20
# The S3 URI options understood here (pyarrow's own names).
_S3_OPTIONS = ("endpoint_override", "scheme", "region", "allow_bucket_creation")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A URI or local path -> (filesystem, path inside it)."""
    try:
        if "://" not in uri:
            return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
        if uri.startswith("s3://"):
            return _s3(uri)
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"cannot open storage location {redact(uri)!r}: {exc}") from None


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    """An S3FileSystem with everything it needs spelled out (see the module docstring)."""
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - set(_S3_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in the query string (known: {', '.join(_S3_OPTIONS)})")
    if not parts.hostname:
        raise ValueError("no bucket (expected s3://BUCKET/PREFIX)")
    env = os.environ
    endpoint = (query.get("endpoint_override") or env.get("AWS_ENDPOINT_URL_S3")
                or env.get("AWS_ENDPOINT_URL") or None)
    scheme = query.get("scheme") or (endpoint.split("://", 1)[0] if endpoint and "://" in endpoint
                                     else "https")
    kwargs: dict[str, object] = {"scheme": scheme, "connect_timeout": 10.0}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    region = query.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region and not endpoint:  # AWS itself: the bucket's region, as from_uri finds it
        try:
            region = pafs.resolve_s3_region(parts.hostname)
        except OSError:
            region = None  # let the SDK's default apply; the first request says what is wrong
    if region:
        kwargs["region"] = region
    if query.get("allow_bucket_creation", "").lower() in ("1", "true"):
        kwargs["allow_bucket_creation"] = True
    key = parts.username or env.get("AWS_ACCESS_KEY_ID")
    secret = parts.password or env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret)
        if not parts.username and env.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = env["AWS_SESSION_TOKEN"]
    path = f"{parts.hostname}{parts.path}".rstrip("/")
    return pafs.S3FileSystem(**kwargs), path  # type: ignore[arg-type]


def redact(uri: str) -> str:
    """The URI without a password (an s3://KEY:SECRET@bucket form)."""
    parts = urlsplit(uri) if "://" in uri else None
    if parts is None or not parts.password:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)


def join(uri: str, *parts: str) -> str:
    """`uri`/parts..., keeping a query string (an S3 endpoint) at the end where it belongs."""
    base, sep, query = uri.partition("?")
    joined = "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return f"{joined}{sep}{query}"


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def ensure_dir(fs: pafs.FileSystem, folder: str) -> None:
    """Create `folder` where folders exist; an object store has none (creating one would
    cost a marker object per level and request)."""
    if fs.type_name not in ("s3", "gcs"):
        fs.create_dir(folder, recursive=True)


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    """Content hash of one file, streamed: never the whole file in memory."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish_file(fs: pafs.FileSystem, path: str, write: Callable[[pa.NativeFile], None]) -> None:
    """Publish one file atomically: a reader sees the whole of it or the previous version
    (or nothing), never a part. `write` writes the content to the stream it is given.

    On an object store one PUT is atomic (a multipart upload shows only once completed),
    so the file is written in place, from memory: the content is rendered first, so that
    a `write` that fails uploads nothing (closing a stream would complete the upload with
    whatever it had). Elsewhere it is written to a hidden temporary file next to it and
    renamed over the target: a rename of a file (never of a folder) is atomic on POSIX."""
    folder = path.rsplit("/", 1)[0]
    ensure_dir(fs, folder)
    if not is_local(fs):
        buf = pa.BufferOutputStream()
        write(buf)
        data = buf.getvalue()
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    tmp = f"{folder}/.{path.rsplit('/', 1)[-1]}.{secrets.token_hex(4)}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def put_bytes(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """`publish_file` for content already in memory (a JSON document, a report)."""
    publish_file(fs, path, lambda out: out.write(data))


def put_table(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """`publish_file` for a Parquet file."""
    import pyarrow.parquet as pq

    publish_file(fs, path, lambda out: pq.write_table(table, out))


def list_files(fs: pafs.FileSystem, path: str, suffixes: tuple[str, ...]) -> list[pafs.FileInfo]:
    """The files at `path` (a file, or a folder searched recursively) with one of the suffixes.

    For source batches the user drops in a folder: what the platform itself publishes as
    a folder of parts is read through its manifest (mlplatform.manifest), never listed."""
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
