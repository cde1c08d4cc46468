"""The commit protocol (mlplatform.manifest) and the atomic single-file put, each test run
against a local folder and against a real S3-compatible server (moto, tests/s3_server.py).

The independent truth is what the storage holds, listed by boto3 or the OS, and the rows
written, counted here."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mlplatform import manifest, storage
from tests.s3_server import S3Env, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Env]:
    with moto_s3("manifest-tests") as env, env.environment():
        yield env


@pytest.fixture(params=["local", "s3"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URI: a local folder, or a prefix in the S3 bucket (a fresh one per test)."""
    if request.param == "local":
        return str(tmp_path / "store")
    env: S3Env = request.getfixturevalue("s3")
    return f"{env.uri}/{request.node.name.replace('[', '-').rstrip(']')}"


def _table(start: int, n: int) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "v": [float(i) for i in range(start, start + n)]})


def _stored_files(uri: str) -> list[str]:
    """Every file under `uri`, relative to it, as the storage itself lists them."""
    fs, root = storage.resolve(uri)
    if not storage.exists(fs, root):
        return []
    return sorted(i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                  if i.type == pafs.FileType.File)


def _write(uri: str, tables: list[pa.Table], *, commit: bool = True,
           content_hash: str | None = None) -> manifest.PartSink:
    sink = manifest.sink(uri, manifest.new_write_id("t"))
    parts = [sink.write_table(t, f"{i:03d}") for i, t in enumerate(tables)]
    if commit:
        manifest.commit(sink.fs, sink.folder, parts, write_id=sink.write_id, writer="test",
                        content_hash=content_hash)
    return sink


def _read_ids(uri: str) -> list[int]:
    fs, files = manifest.committed_files(uri)
    return sorted(pq.read_table(files, filesystem=fs).column("id").to_pylist()) if files else []


def test_parts_without_a_manifest_are_invisible(base: str) -> None:
    uri = storage.join(base, "snap")
    _write(uri, [_table(0, 5), _table(5, 5)], commit=False)
    assert len([f for f in _stored_files(uri) if f.startswith("part-")]) == 2  # the parts are there
    fs, folder = storage.resolve(uri)
    assert manifest.read(fs, folder) is None
    with pytest.raises(manifest.NotCommitted, match="nothing committed at .*_manifest.json"):
        manifest.committed_files(uri)
    with pytest.raises(FileNotFoundError):  # readers that skip missing data skip it alike
        manifest.committed_files(storage.join(base, "never-written"))


def test_a_commit_publishes_exactly_its_parts(base: str) -> None:
    uri = storage.join(base, "snap")
    sink = _write(uri, [_table(0, 3), _table(3, 4)], content_hash="abc")
    found = manifest.read(sink.fs, sink.folder)
    assert found is not None and found.rows == 7 and found.content_hash == "abc"
    assert found.write_id == sink.write_id and len(found.files) == 2
    assert _read_ids(uri) == list(range(7))
    assert _stored_files(uri) == sorted([manifest.MANIFEST, *(p.name for p in found.files)])


def test_a_superseding_write_replaces_the_rows_and_deletes_the_old_parts(base: str) -> None:
    uri = storage.join(base, "validated")
    first = _write(uri, [_table(0, 10)])
    old_parts = [p.name for p in manifest.read(first.fs, first.folder).files]  # type: ignore[union-attr]
    _write(uri, [_table(100, 2), _table(102, 2)])
    assert _read_ids(uri) == [100, 101, 102, 103]
    assert not set(old_parts) & set(_stored_files(uri))
    assert len(_stored_files(uri)) == 3  # the manifest and the two new parts, nothing else


def test_a_crash_between_parts_and_manifest_leaves_nothing_visible(base: str) -> None:
    uri = storage.join(base, "snap")
    _write(uri, [_table(0, 4)])
    # A second attempt writes its parts and dies before its manifest: readers still see the
    # first write, exactly, and none of the dead attempt's rows.
    _write(uri, [_table(50, 6), _table(56, 6)], commit=False)
    assert _read_ids(uri) == [0, 1, 2, 3]
    # The next successful write clears the dead attempt's leftovers too.
    _write(uri, [_table(7, 1)])
    assert _read_ids(uri) == [7] and len(_stored_files(uri)) == 2


def test_a_retried_write_is_idempotent(base: str) -> None:
    uri = storage.join(base, "snap")
    tables = [_table(0, 5), _table(5, 5)]
    _write(uri, tables, commit=False)  # the first attempt crashed
    fs, folder = storage.resolve(uri)
    hashes = []
    for _ in range(2):  # the retry, then a re-run of the same step
        _write(uri, tables)
        found = manifest.read(fs, folder)
        assert found is not None
        hashes.append(found.content_hash)
        assert _read_ids(uri) == list(range(10))
        assert len(_stored_files(uri)) == 3
    assert hashes[0] == hashes[1]  # the same content, whatever the write ids


def test_an_empty_write_commits_as_no_rows(base: str) -> None:
    """A batch with no valid row is committed as such: present, with no files (not absent)."""
    uri = storage.join(base, "empty")
    _write(uri, [])
    assert manifest.committed_files(uri)[1] == []
    assert manifest.committed(uri)[1].rows == 0


def test_a_commit_refuses_parts_that_are_gone(base: str) -> None:
    uri = storage.join(base, "snap")
    sink = manifest.sink(uri, manifest.new_write_id())
    part = sink.write_table(_table(0, 3), "a")
    sink.fs.delete_file(f"{sink.folder}/{part.name}")  # e.g. another writer's commit deleted it
    with pytest.raises(manifest.PlatformError, match="are gone"):
        manifest.commit(sink.fs, sink.folder, [part], write_id=sink.write_id, writer="test")
    assert manifest.read(sink.fs, sink.folder) is None


def test_remove_withdraws_a_write(base: str) -> None:
    uri = storage.join(base, "snap")
    sink = _write(uri, [_table(0, 3)])
    manifest.remove(sink.fs, sink.folder)
    with pytest.raises(manifest.NotCommitted):
        manifest.committed_files(uri)
    assert _stored_files(uri) == []


def test_a_sink_pickles_with_its_endpoint_and_keys(base: str) -> None:
    """What a Ray task receives: it reaches the same storage without this process's variables."""
    uri = storage.join(base, "pickled")
    sink = pickle.loads(pickle.dumps(manifest.sink(uri, "w1")))
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    try:
        part = sink.write_table(_table(0, 2), "a")
    finally:
        os.environ.update(saved)
    manifest.commit(sink.fs, sink.folder, [part], write_id="w1", writer="test")
    assert _read_ids(uri) == [0, 1]


def test_publish_file_replaces_whole_or_not_at_all(base: str) -> None:
    fs, folder = storage.resolve(storage.join(base, "reports"))
    path = f"{folder}/report.json"
    storage.put_bytes(fs, path, b'{"v": 1}')
    storage.put_bytes(fs, path, b'{"v": 2}')

    def dies(out: pa.NativeFile) -> None:
        out.write(b'{"v": 3, "half')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        storage.publish_file(fs, path, dies)
    with fs.open_input_stream(path) as src:
        assert src.read() == b'{"v": 2}'
    assert _stored_files(storage.join(base, "reports")) == ["report.json"]  # no temporary file left


def test_the_s3_objects_are_where_the_uri_says(s3: S3Env) -> None:
    """Checked through boto3, not pyarrow: the manifest and parts are real objects in the bucket."""
    uri = f"{s3.uri}/truth/snap"
    sink = _write(uri, [_table(0, 2)])
    keys = s3.keys(f"{s3.prefix}/truth/snap/")
    found = manifest.read(sink.fs, sink.folder)
    assert found is not None
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == sorted([manifest.MANIFEST, found.files[0].name])
    assert b'"rows": 2' in s3.get(f"{s3.prefix}/truth/snap/{manifest.MANIFEST}")


def test_an_s3_uri_may_carry_its_endpoint(s3: S3Env) -> None:
    """Without any AWS variable but the keys, the query string alone reaches the server."""
    saved = {k: os.environ.pop(k) for k in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")}
    try:
        uri = f"{s3.uri}/query/snap?endpoint_override={s3.endpoint}&scheme=http&region=us-east-1"
        assert storage.join(f"{s3.uri}?scheme=http", "a", "b") == f"{s3.uri}/a/b?scheme=http"
        _write(uri, [_table(0, 3)])
        assert _read_ids(uri) == [0, 1, 2]
    finally:
        os.environ.update(saved)
    assert len(s3.keys(f"{s3.prefix}/query/snap/")) == 2


def test_an_unknown_s3_option_is_named() -> None:
    with pytest.raises(storage.InputError, match="endpoint_overide"):
        storage.resolve("s3://b/p?endpoint_overide=http://x")
