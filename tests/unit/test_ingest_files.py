"""Which batch files the ingest step sets aside, and why: the per-file checks, without Ray."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mlplatform.data.ingest import UnreadableFile, check_ingestible, check_parses, split_consistent

FS = pafs.LocalFileSystem()


class FailingReads:
    """A storage file whose reads fail after `after` of them, as S3 under a 503 or a timeout,
    or NFS in trouble, fail part way (a fault no test can cause for real on a local disk)."""

    def __init__(self, f: pa.NativeFile, after: int = 0):
        self.f, self.left = f, after

    def read(self, nbytes: int | None = None) -> bytes:
        if self.left <= 0:
            raise OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate.")
        self.left -= 1
        return self.f.read(nbytes)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()

    @property
    def closed(self) -> bool:
        return self.f.closed


class FlakyStorage:
    """`fs`, except that reads of `path` fail after `after` reads (`None`: opening it fails)."""

    def __init__(self, fs: pafs.FileSystem, path: str, after: int | None = 0):
        self.fs, self.path, self.after = fs, path, after

    def _flaky(self, path: str, f: pa.NativeFile) -> pa.NativeFile | FailingReads:
        if path != self.path:
            return f
        if self.after is None:
            f.close()
            raise OSError(f"When reading information for key '{path}': AWS Error NETWORK_CONNECTION")
        return FailingReads(f, self.after)

    def open_input_file(self, path: str) -> pa.NativeFile | FailingReads:
        return self._flaky(path, self.fs.open_input_file(path))

    def open_input_stream(self, path: str, compression: str | None) -> pa.NativeFile | FailingReads:
        return self._flaky(path, self.fs.open_input_stream(path, compression=compression))


def _info(path: Path) -> pafs.FileInfo:
    return FS.get_file_info(str(path))


def _reason(fn, fs: pafs.FileSystem, file: pafs.FileInfo | str, fmt: str) -> str:  # noqa: ANN001
    """Why `fn` refuses the file; its message names the file too."""
    with pytest.raises(UnreadableFile) as exc:
        fn(fs, file, fmt)
    assert (file if isinstance(file, str) else file.path) in exc.value.message
    return exc.value.reason


def test_empty_rowless_and_garbage_files_are_not_ingestible(tmp_path: Path) -> None:
    (tmp_path / "empty.parquet").write_bytes(b"")
    pq.write_table(pa.table({"x": pa.array([], pa.int64())}), tmp_path / "rowless.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 but not really")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "fine.parquet")
    def why(name: str) -> str:
        return _reason(check_ingestible, FS, _info(tmp_path / name), "parquet")

    assert why("empty.parquet") == "empty file (0 bytes)"
    assert why("rowless.parquet") == "no rows"
    assert why("junk.parquet").startswith("cannot be read as parquet: ")
    assert check_ingestible(FS, _info(tmp_path / "fine.parquet"), "parquet").names == ["x"]


def test_a_full_read_finds_what_the_footer_and_first_block_hide(tmp_path: Path) -> None:
    path = tmp_path / "pages.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path)
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[4: len(raw) - 8 - footer] = b"\xab" * (len(raw) - 12 - footer)
    path.write_bytes(bytes(raw))
    check_ingestible(FS, _info(path), "parquet")  # the footer is fine
    assert _reason(check_parses, FS, str(path), "parquet").startswith("cannot be parsed as parquet: ")
    (tmp_path / "header.csv").write_text("a,b\n")
    assert _reason(check_parses, FS, str(tmp_path / "header.csv"), "csv") == "no rows"
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    ragged = _reason(check_parses, FS, str(tmp_path / "ragged.csv"), "csv")
    assert ragged.startswith("cannot be parsed as csv: ")
    (tmp_path / "fine.csv").write_text("a,b\n1,2\n3,4\n")
    assert check_parses(FS, str(tmp_path / "fine.csv"), "csv") == 2


def test_the_odd_file_out_is_rejected_even_when_it_comes_first() -> None:
    num, text = pa.schema([("age", pa.float64())]), pa.schema([("age", pa.string())])
    kept, rejected = split_consistent({"a": text, "b": num, "c": num})
    assert kept == ["b", "c"] and list(rejected) == ["a"]
    assert rejected["a"] == "column 'age' has type string, not double as in b"
    kept, rejected = split_consistent({"a": num, "b": text})  # a tie: the first is kept
    assert kept == ["a"] and list(rejected) == ["b"]


def test_types_arrow_can_unify_are_not_a_conflict() -> None:
    ints, floats = pa.schema([("x", pa.int64())]), pa.schema([("x", pa.float64()), ("y", pa.string())])
    assert split_consistent({"a": ints, "b": floats}) == (["a", "b"], {})


def test_a_storage_fault_while_reading_is_an_io_error_not_a_verdict_on_the_content(tmp_path: Path) -> None:
    """Arrow raises OSError for a corrupt page or gzip stream too: only the storage's own
    errors, wherever the reader meets them, make an `io_error` (retried, exit 1)."""
    path = tmp_path / "days.parquet"
    pq.write_table(pa.table({"x": list(range(10_000))}), path)
    (tmp_path / "days.csv.gz").write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 500_000))
    info, gz = _info(path), str(tmp_path / "days.csv.gz")
    faults = [(check_ingestible, FlakyStorage(FS, info.path, None), info, "parquet"),  # opening
              (check_ingestible, FlakyStorage(FS, info.path), info, "parquet"),  # the footer
              (check_parses, FlakyStorage(FS, info.path, 1), info.path, "parquet"),  # past the footer
              (check_parses, FlakyStorage(FS, gz, 1), gz, "csv")]  # past the first block
    for fn, fs, file, fmt in faults:
        with pytest.raises(UnreadableFile) as exc:
            fn(fs, file, fmt)
        assert exc.value.io_error and exc.value.exit_code == 1, (fn, fs.after, exc.value.message)
        assert exc.value.reason.startswith("I/O error while reading: ") and "AWS Error" in exc.value.reason
    assert check_parses(FlakyStorage(FS, info.path, 1000), info.path, "parquet") == 10_000

    raw = bytearray(path.read_bytes())  # the reader's OSErrors are about the content
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[4: len(raw) - 8 - footer] = b"\xab" * (len(raw) - 12 - footer)
    path.write_bytes(bytes(raw))
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 1000)[:-30] + b"x" * 30)
    for file, fmt in ((info.path, "parquet"), (str(tmp_path / "cut.csv.gz"), "csv")):
        with pytest.raises(UnreadableFile) as exc:
            check_parses(FS, file, fmt)
        assert not exc.value.io_error and exc.value.exit_code == 2, exc.value.message
        assert exc.value.reason.startswith(f"cannot be parsed as {fmt}: ")


def test_validate_by_hand_refuses_a_batch_whose_files_disagree_on_a_type(tmp_path: Path) -> None:
    """`platformctl validate --batch DIR` reads the files as one table: exit 2 naming both."""
    from mlplatform.data.ingest import batch_files
    from mlplatform.errors import InputError

    pq.write_table(pa.table({"age": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"age": ["x", "y"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError) as info:
        batch_files(str(tmp_path), "parquet", "--batch")
    assert info.value.exit_code == 2
    assert "b.parquet" in info.value.message and "a.parquet" in info.value.message
    assert "'age'" in info.value.message
