"""Tests written to kill surviving mutants of ``vlm_eval/reduce/files.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

What is contract here: every ``*.parquet`` under a run's table folder is listed (never a temp
file or another extension), in (mtime, path) order, with the ``model=`` folder name as its key
string; each is checked against the declared schema and every bad file is named in one
TableFileError; a checked file is read as the schema, one column can be read batch by batch."""
from __future__ import annotations

import datetime as dt
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlm_eval.reduce import files
from vlm_eval.reduce.files import TableFile, TableFileError

T2020 = 1577836800.0  # 2020-01-01T00:00:00 UTC: 50 years * 365 days + 12 leap days = 18262 days * 86400 s


def _write(path, table=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table if table is not None else pa.table({"a": pa.array([1, 2], pa.int64())}), path)
    return str(path)


def _touch(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


# ---------------------------------------------------------------- _mtime


@pytest.mark.parametrize("info, want", [
    ({"mtime": 5}, 5.0),
    ({"LastModified": 7}, 7.0),
    ({"last_modified": 8.5}, 8.5),
    ({"updated": 9}, 9.0),
    ({"modified": 10}, 10.0),
    ({"mtime": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)}, T2020),
    ({"LastModified": "2020-01-01T00:00:00Z"}, T2020),
    ({"updated": "2020-01-01T00:00:00+00:00"}, T2020),
    # a value that is not ISO-8601 is skipped and the next key is used
    ({"mtime": "yesterday", "updated": 9}, 9.0),
    # 'Z' is replaced by '+00:00' only; a lowercase 'z' or other text is not an ISO time here
    ({"mtime": "2020-01-01T00:00:00z"}, 0.0),
    ({"mtime": "2020-01-01T00:00:00XXZXX"}, 0.0),
    ({}, 0.0),
    ({"created": 3}, 0.0),
])
def test_mtime_reads_each_listing_key(info, want):
    got = files._mtime(info)
    assert type(got) is float and got == want


def test_mtime_takes_the_first_key_in_its_order():
    assert files._mtime({"modified": 1, "updated": 2, "last_modified": 3, "LastModified": 4, "mtime": 5}) == 5.0
    assert files._mtime({"modified": 1, "updated": 2, "last_modified": 3, "LastModified": 4}) == 4.0
    assert files._mtime({"modified": 1, "updated": 2, "last_modified": 3}) == 3.0
    assert files._mtime({"modified": 1, "updated": 2}) == 2.0


# ---------------------------------------------------------------- list_table_files


def test_list_table_files_keeps_parquet_only_with_hive_keys_in_commit_order(tmp_path):
    root = tmp_path / "preds"
    a = _write(root / "model=007" / "b.parquet")
    b = _write(root / "model=007" / "a.parquet")
    c = _write(root / "model=m2" / "c.parquet")
    loose = _write(root / "loose.parquet")
    nested = _write(root / "model=x" / "deep" / "d.parquet")
    other = _write(root / "other=b" / "e.parquet")
    xkey = _write(root / "Xmodel=q" / "g.parquet")
    _touch(root / "model=007" / "aa.txt")  # sorts before the .parquet files of its folder
    _write(root / "model=007" / "part.tmp-123.parquet")
    _write(root / "model=007" / "part.TMP-9.parquet")  # the marker is case-sensitive: listed
    upper = str(root / "model=007" / "part.TMP-9.parquet")
    # mtimes: c=100, a=b=200 (path decides: a.parquet < b.parquet), the rest 300
    for p, t in ((c, 100), (a, 200), (b, 200), (loose, 300), (nested, 300), (other, 300), (xkey, 300),
                 (upper, 300)):
        os.utime(p, (t, t))
    got = files.list_table_files(str(root))
    assert [(f.path, f.key, f.mtime, f.rows) for f in got] == [
        (c, "m2", 100.0, -1),
        (b, "007", 200.0, -1),  # .../model=007/a.parquet
        (a, "007", 200.0, -1),  # .../model=007/b.parquet
        (xkey, None, 300.0, -1),  # 'Xmodel=q' is not a model= folder
        (loose, None, 300.0, -1),
        (upper, "007", 300.0, -1),
        (nested, None, 300.0, -1),  # two folders deep: no key
        (other, None, 300.0, -1),  # not a model= folder
    ]
    assert files.list_table_files(str(tmp_path / "missing")) == []
    assert [f.key for f in files.list_table_files(str(root), key="other")] == [None] * 7 + ["b"]


def test_list_table_files_reads_keys_under_a_folder_ending_in_x_or_a_space(tmp_path):
    for name in ("runX", "run "):
        p = _write(tmp_path / name / "model=a" / "f.parquet")
        got = files.list_table_files(str(tmp_path / name))
        assert [(f.path, f.key) for f in got] == [(p, "a")]


def test_list_table_files_takes_a_backslash_as_a_folder_separator(tmp_path):
    # a listing that joins with '\\' (Windows-style): 'model=a\\f.parquet' is file f in folder model=a
    p = _write(tmp_path / "r" / "model=a\\f.parquet")
    got = files.list_table_files(str(tmp_path / "r"))
    assert [(f.path, f.key) for f in got] == [(p, "a")]


def test_list_table_files_gives_urls_for_a_url_folder():
    fs = fsspec.filesystem("memory")
    for base in ("/hfiles-mut/run", "/hfiles-mut/x://y"):
        with fs.open(base + "/model=m/p.parquet", "wb") as fh:
            pq.write_table(pa.table({"a": [1]}), fh)
    try:
        got = files.list_table_files("memory://hfiles-mut/run")
        assert [(f.path, f.key, f.mtime) for f in got] == [("memory:///hfiles-mut/run/model=m/p.parquet", "m", 0.0)]
        # only the first '://' ends the protocol
        got = files.list_table_files("memory:///hfiles-mut/x://y")
        assert [(f.path, f.key) for f in got] == [("memory:///hfiles-mut/x://y/model=m/p.parquet", "m")]
    finally:
        fs.rm("/hfiles-mut", recursive=True)


# ---------------------------------------------------------------- footer, read_parquet, check_file


SCHEMA = pa.schema([("a", pa.int64()), ("s", pa.string())])


def test_footer_and_read_parquet(tmp_path):
    p = _write(tmp_path / "model=a" / "f.parquet", pa.table({"a": pa.array([1, 2, 3], pa.int64()), "s": ["x", "y", "z"]}))
    f = TableFile(p, "a", 0.0)
    schema, rows = files.footer(f)
    assert schema.names == ["a", "s"] and rows == 3
    assert files.read_parquet(f, ["s"]).to_pydict() == {"s": ["x", "y", "z"]}
    assert files.read_parquet(f).column_names == ["a", "s"]


def test_check_file_reasons_word_for_word(tmp_path):
    good = _write(tmp_path / "model=a" / "f.parquet", pa.table({"a": pa.array([1, 2, 3], pa.int32()), "s": ["x", "y", "z"]}))
    assert files.check_file(TableFile(good, "a", 0.0), SCHEMA, ["a"]) == (None, 3)  # int32 -> int64 casts
    assert files.check_file(TableFile(good, None, 0.0), SCHEMA, ["a"]) == ("not inside a model=NAME/ folder", -1)
    assert files.check_file(TableFile(good, None, 0.0), SCHEMA, ["a"], "run") == ("not inside a run=NAME/ folder", -1)
    assert files.check_file(TableFile(good, "", 0.0), SCHEMA, ["a"]) == ("empty model name in its folder", -1)
    assert files.check_file(TableFile(good, None, 0.0), SCHEMA, ["a"], None) == (None, 3)
    junk = _touch(tmp_path / "model=a" / "junk.parquet", "hello")  # 5 bytes: no Parquet footer
    assert files.check_file(TableFile(junk, "a", 0.0), SCHEMA, ["a"]) == (
        "unreadable as Parquet (ArrowInvalid: Parquet file size is 5 bytes, smaller than the minimum file footer (8 bytes))", -1)
    assert files.check_file(TableFile(good, "a", 0.0), SCHEMA, ["a", "b"]) == (
        "lacks required column(s) ['b'] (has ['a', 's'])", 3)
    wrong = _write(tmp_path / "model=a" / "w.parquet", pa.table({"a": [1], "s": pa.array([2], pa.int64())}))
    assert files.check_file(TableFile(wrong, "a", 0.0), SCHEMA, ["a"]) == ("column 's' is int64, expected string", 1)


@pytest.mark.parametrize("src, dst, want", [
    (pa.null(), pa.string(), True), (pa.null(), pa.int64(), True), (pa.null(), pa.timestamp("s"), True),
    (pa.string(), pa.string(), True), (pa.large_string(), pa.string(), True),
    (pa.dictionary(pa.int32(), pa.string()), pa.string(), True), (pa.int64(), pa.string(), False),
    (pa.string(), pa.large_string(), True), (pa.float64(), pa.large_string(), False),
    (pa.int8(), pa.int64(), True), (pa.float64(), pa.int64(), False), (pa.string(), pa.int64(), False),
    (pa.float32(), pa.float64(), True), (pa.int32(), pa.float64(), True), (pa.string(), pa.float64(), False),
    (pa.bool_(), pa.bool_(), True), (pa.int64(), pa.bool_(), False),
    (pa.int64(), pa.timestamp("s"), False), (pa.timestamp("s"), pa.timestamp("ms"), False),
])
def test_castable_matrix(src, dst, want):
    assert files._castable(src, dst) is want


# ---------------------------------------------------------------- checked_files


TAIL = ("Nothing was reduced (reading around them could drop or mix results). Move stray files out of "
        "the run folder; a damaged shard is rebuilt by rerunning the job with the same run_id after "
        "deleting it.")


@pytest.mark.parametrize("n_bad, more", [(1, ""), (20, ""), (21, "\n  ... and 1 more"), (22, "\n  ... and 2 more")])
def test_checked_files_names_at_most_20_bad_files(tmp_path, n_bad, more):
    root = tmp_path / "r"
    paths = sorted(_touch(root / f"s{i:02d}.parquet") for i in range(n_bad))  # not in a model= folder
    for p in paths:
        os.utime(p, (50, 50))  # one mtime: path order
    lines = "\n".join(f"  {p}: not inside a model=NAME/ folder" for p in paths[:20])
    with pytest.raises(TableFileError) as ei:
        files.checked_files(str(root), SCHEMA, ["a"], "score")
    assert str(ei.value) == f"{n_bad} file(s) under {root} are not score files:\n{lines}{more}\n{TAIL}"


def test_checked_files_uses_the_given_key_and_counts_rows(tmp_path):
    root = tmp_path / "r"
    p = _write(root / "run=r1" / "f.parquet", pa.table({"a": pa.array([4, 5, 6], pa.int64())}))
    assert files.checked_files(str(root), SCHEMA, ["a"], "x", key="run") == [TableFile(p, "r1", os.path.getmtime(p), 3)]
    q = _write(root / "model=m" / "g.parquet", pa.table({"a": pa.array([7], pa.int64())}))
    os.utime(p, (10, 10))
    os.utime(q, (20, 20))
    # key None: no folder needed, but a model= folder still gives the key
    assert files.checked_files(str(root), SCHEMA, ["a"], "x", key=None) == [
        TableFile(p, None, 10.0, 3), TableFile(q, "m", 20.0, 1)]


def test_prediction_files_names_the_table(tmp_path):
    root = tmp_path / "predictions"
    p = _touch(root / "stray.parquet")
    with pytest.raises(TableFileError) as ei:
        files.prediction_files(str(root))
    assert str(ei.value).startswith(f"1 file(s) under {root} are not prediction files:\n  {p}: not inside a model=NAME/ folder\n")


# ---------------------------------------------------------------- read_file, iter_column, with_keys, basename


def test_read_file_reads_the_schema_with_nulls_for_absent_columns(tmp_path):
    p = _write(tmp_path / "model=a" / "f.parquet",
               pa.table({"s": ["x", "y"], "a": pa.array([1, 2], pa.int32()), "extra": [0.5, 0.25]}))
    f = TableFile(p, "a", 0.0)
    schema = pa.schema([("a", pa.int64()), ("s", pa.string()), ("b", pa.float64())])
    got = files.read_file(f, schema)
    assert got.schema == schema and got.to_pydict() == {"a": [1, 2], "s": ["x", "y"], "b": [None, None]}
    got = files.read_file(f, schema, ["s", "b"])
    assert got.schema == pa.schema([("s", pa.string()), ("b", pa.float64())])
    assert got.to_pydict() == {"s": ["x", "y"], "b": [None, None]}


def test_iter_column_batches(tmp_path):
    p = _write(tmp_path / "f.parquet", pa.table({"a": pa.array(range(5), pa.int64()), "b": ["v"] * 5}))
    batches = list(files.iter_column(TableFile(p, None, 0.0), "a", batch_size=2))
    assert [b.schema.names for b in batches] == [["a"]] * 3
    assert [b.column(0).to_pylist() for b in batches] == [[0, 1], [2, 3], [4]]  # 5 rows by 2: 2 + 2 + 1


def test_iter_column_default_batch_is_65536_rows(tmp_path):
    p = str(tmp_path / "big.parquet")
    pq.write_table(pa.table({"a": pa.array([1] * 65537, pa.int8())}), p, row_group_size=1 << 20)
    assert [b.num_rows for b in files.iter_column(TableFile(p, None, 0.0), "a")] == [65536, 1]  # 65537 = 65536 + 1


def test_with_keys_puts_a_string_model_column_first():
    t = pa.table({"x": [1, 2]})
    got = files.with_keys(t, TableFile("p", "007", 0.0))
    assert got.schema.names == ["model", "x"] and got.schema.field("model").type == pa.string()
    assert got.column("model").to_pylist() == ["007", "007"]
    got = files.with_keys(t, TableFile("p", None, 0.0))  # not in a model= folder: null strings
    assert got.schema.field("model").type == pa.string() and got.column("model").to_pylist() == [None, None]
    empty = files.with_keys(pa.table({"x": pa.array([], pa.int64())}), TableFile("p", "m", 0.0))
    assert empty.schema == pa.schema([("model", pa.string()), ("x", pa.int64())]) and empty.num_rows == 0


def test_basename_takes_backslashes_as_separators():
    assert files.basename("a\\b\\c.parquet") == "c.parquet"
    assert files.basename("s3://bucket/run/model=a/p.parquet") == "p.parquet"
    assert files.basename("dir/") == ""
