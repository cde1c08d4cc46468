"""Which batch files the ingest step sets aside, and why: the per-file checks, without Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mlplatform.data.ingest import UnreadableFile, check_ingestible, check_parses, split_consistent

FS = pafs.LocalFileSystem()


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
