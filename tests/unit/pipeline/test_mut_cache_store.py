"""The partitioned store under the prediction cache and the pre-keys (``pipeline/cache_store.py``,
``pipeline/prekey.py``), checked against values worked out by hand (written for the
session-5 mutation runs).
"""
from __future__ import annotations

import hashlib
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval import storage
from vlm_eval.pipeline import cache_store, prekey

SCHEMA = pa.schema([("k", pa.binary(32)), ("v", pa.float64())])


def _t(keys: list[int], vals: list[float | None]) -> pa.Table:
    return pa.table({"k": [bytes([i]) * 32 for i in keys], "v": vals}, schema=SCHEMA)


def _files(root) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            out.setdefault(os.path.basename(dirpath), []).append(n)
    return {k: sorted(v) for k, v in sorted(out.items())}


# --- read_part -----------------------------------------------------------------------------

def test_read_part_reads_only_parquet_files_through_the_schema(tmp_path):
    root = str(tmp_path / "store")
    cache_store.write_part(root, "ab", "a", _t([1, 2], [0.5, None]))
    folder = tmp_path / "store" / "part=ab"
    # Another writer's file: columns in another order, an all-null column of null type.
    pq.write_table(pa.table({"v": pa.nulls(1), "k": pa.array([bytes([3]) * 32], pa.binary(32))}), str(folder / "b.parquet"))
    (folder / "_SUCCESS").write_bytes(b"")  # a marker some tools leave: not a parquet file
    t = cache_store.read_part(root, "ab", SCHEMA, "k")
    assert t.schema == SCHEMA
    assert t.to_pydict() == {"k": [bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32], "v": [0.5, None, None]}
    assert cache_store.read_part(root, "cd", SCHEMA, "k") is None  # no such partition


def test_read_part_skips_files_compacted_away_after_the_listing(tmp_path, monkeypatch):
    root = str(tmp_path / "store")
    cache_store.write_part(root, "ab", "b", _t([1], [0.25]))
    cache_store.write_part(root, "ab", "c", _t([2], [0.75]))
    real = storage.list_files
    gone = [str(tmp_path / "store" / "part=ab" / "a.parquet"), str(tmp_path / "store" / "part=zz" / "x.parquet")]

    def listing_then_removed(url, suffix=""):  # listed, then removed by a compaction
        return ([gone[0]] if url.endswith("part=ab") else [gone[1]]) + real(url, suffix)

    monkeypatch.setattr(storage, "list_files", listing_then_removed)
    # The first listed file is gone: the other two are still read.
    assert cache_store.read_part(root, "ab", SCHEMA, "k").to_pydict() == {"k": [bytes([1]) * 32, bytes([2]) * 32],
                                                                          "v": [0.25, 0.75]}
    # Every listed file gone: no entries (None), not an error.
    assert cache_store.read_part(root, "zz", SCHEMA, "k") is None


# --- load_cached / forget --------------------------------------------------------------------

def test_load_cached_memoises_the_last_8_partitions_used(tmp_path):
    calls: list[tuple[str, str]] = []

    def loader(root, part):
        calls.append((root, part))
        return f"{root}|{part}"

    r = str(tmp_path / f"lru-{uuid.uuid4().hex}")
    assert cache_store.load_cached(r, "00", loader, "t") == f"{r}|00"
    assert cache_store.load_cached(r, "01", loader, "t") == f"{r}|01"  # another partition, its own value
    assert cache_store.load_cached(r, "00", loader, "t") == f"{r}|00" and calls == [(r, "00"), (r, "01")]
    # The default token is the "" pass: one memo for both spellings.
    cache_store.load_cached(r, "00", loader)
    cache_store.load_cached(r, "00", loader, "")
    assert calls.count((r, "00")) == 2
    calls.clear()
    # Use 00 (now most recent), then 7 new partitions 10..16: 8 held = 00 and 10..16;
    # 01 (least recently used) and the "" pass of 00 were evicted.
    cache_store.load_cached(r, "00", loader, "t")
    for i in range(10, 17):
        cache_store.load_cached(r, str(i), loader, "t")
    assert len(calls) == 7
    for part in ["00"] + [str(i) for i in range(10, 17)]:
        cache_store.load_cached(r, part, loader, "t")
    assert len(calls) == 7  # every one of the 8 still memoised
    cache_store.load_cached(r, "01", loader, "t")
    assert calls[-1] == (r, "01") and len(calls) == 8


def test_forget_drops_the_memo_of_one_root_only(tmp_path):
    calls: list[tuple[str, str]] = []

    def loader(root, part):
        calls.append((root, part))
        return part

    a, b = str(tmp_path / f"a-{uuid.uuid4().hex}"), str(tmp_path / f"b-{uuid.uuid4().hex}")
    cache_store.load_cached(a, "00", loader, "t")
    cache_store.load_cached(b, "00", loader, "t")
    cache_store.forget(a)
    cache_store.load_cached(a, "00", loader, "t")
    cache_store.load_cached(b, "00", loader, "t")
    assert calls == [(a, "00"), (b, "00"), (a, "00")]  # a read again, b still memoised


# --- compact ---------------------------------------------------------------------------------

def test_compact_counts_and_names_and_keeps_the_last_entry_of_a_key(tmp_path):
    root = str(tmp_path / "store")
    assert cache_store.compact(root, SCHEMA, "k") == {"partitions": 0, "files_removed": 0}  # no store yet
    # 00: one file (left alone); 01: two files; 02: three files, key 7 written twice.
    cache_store.write_part(root, "00", "a", _t([1], [0.1]))
    cache_store.write_part(root, "01", "a", _t([2], [0.2]))
    cache_store.write_part(root, "01", "b", _t([3], [0.3]))
    cache_store.write_part(root, "02", "a", _t([7, 4], [0.4, 0.5]))
    cache_store.write_part(root, "02", "b", _t([5], [0.6]))
    cache_store.write_part(root, "02", "c", _t([7], [0.9]))
    (tmp_path / "store" / "part=02" / "_SUCCESS").write_bytes(b"")  # not a parquet file: not touched
    got = cache_store.compact(root, SCHEMA, "k")
    assert got == {"partitions": 2, "files_removed": 5}  # 01: 2 files, 02: 3 files

    def merged_name(part, names):  # compact-<16 hex of sha256 of the sorted file paths, joined>
        paths = sorted(str(tmp_path / "store" / f"part={part}" / n).encode() for n in names)
        return f"compact-{hashlib.sha256(b''.join(paths)).hexdigest()[:16]}.parquet"

    assert _files(tmp_path / "store") == {
        "part=00": ["a.parquet"],
        "part=01": [merged_name("01", ["a.parquet", "b.parquet"])],
        "part=02": ["_SUCCESS", merged_name("02", ["a.parquet", "b.parquet", "c.parquet"])]}
    # Latest (last in name order) entry of key 7 wins: c's 0.9; rows kept in read order.
    t = cache_store.read_part(root, "02", SCHEMA, "k")
    assert t.to_pydict() == {"k": [bytes([4]) * 32, bytes([5]) * 32, bytes([7]) * 32], "v": [0.5, 0.6, 0.9]}
    assert cache_store.compact(root, SCHEMA, "k") == {"partitions": 0, "files_removed": 0}  # nothing left to merge


def test_compact_merges_files_of_another_column_order_and_skips_a_partition_gone_meanwhile(tmp_path, monkeypatch):
    root = str(tmp_path / "store")
    cache_store.write_part(root, "01", "a", _t([2], [0.2]))
    folder = tmp_path / "store" / "part=01"
    pq.write_table(pa.table({"v": [0.3], "k": pa.array([bytes([3]) * 32], pa.binary(32))}), str(folder / "b.parquet"))
    (tmp_path / "store" / "part=00").mkdir()
    real = storage.list_files

    def listing(url, suffix=""):  # part 00: two files listed, both compacted away before reading
        if url.endswith("part=00"):
            return [url + "/x.parquet", url + "/y.parquet"]
        return real(url, suffix)

    monkeypatch.setattr(storage, "list_files", listing)
    assert cache_store.compact(root, SCHEMA, "k") == {"partitions": 1, "files_removed": 2}
    monkeypatch.undo()
    t = cache_store.read_part(root, "01", SCHEMA, "k")
    assert t.schema == SCHEMA and t.to_pydict() == {"k": [bytes([2]) * 32, bytes([3]) * 32], "v": [0.2, 0.3]}


def test_compact_on_an_object_store_url():
    # fsspec's MemoryFileSystem lists with detail=True unless told otherwise.
    import fsspec

    bucket = f"vlm-eval-test-{uuid.uuid4().hex}"
    root = f"memory://{bucket}/store"
    try:
        cache_store.write_part(root, "0a", "a", _t([1], [0.1]))
        cache_store.write_part(root, "0a", "b", _t([2], [0.2]))
        assert cache_store.compact(root, SCHEMA, "k") == {"partitions": 1, "files_removed": 2}
        assert len(storage.list_files(cache_store.part_dir(root, "0a"), ".parquet")) == 1
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{bucket}"):
            fs.rm(f"/{bucket}", recursive=True)


# --- prekey ----------------------------------------------------------------------------------

def test_prekeys_live_under_cache_prekeys():
    assert prekey.root("/data/cache") == "/data/cache/prekeys"
    assert prekey.root("s3://bucket/cache") == "s3://bucket/cache/prekeys"


def test_object_version_prefers_the_store_version_then_size_and_time():
    assert prekey.object_version({"ETag": '"9f3a"', "size": 10, "mtime": 1.5}) == 'ETag="9f3a"'
    assert prekey.object_version({"VersionId": "v7", "LastModified": "2026-01-01"}) == "VersionId=v7"
    assert prekey.object_version({"size": 10, "LastModified": "2026-01-01T00:00:00Z"}) == \
        "size=10;LastModified=2026-01-01T00:00:00Z"
    # Local files: size, mtime, then st_ctime ("created") and the inode, in that order.
    assert prekey.object_version({"size": 10, "mtime": 1.5, "created": 2.25, "ino": 7, "type": "file"}) == \
        "size=10;mtime=1.5;created=2.25;ino=7"
    assert prekey.object_version({"size": 10, "type": "file"}) is None  # nothing that changes with the object


def test_prekey_of_a_local_file_and_of_a_name_that_is_not_utf8(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x" * 5)
    st = os.stat(img)
    version = f"size=5;mtime={st.st_mtime};created={st.st_ctime};ino={st.st_ino}"
    assert prekey.prekey_of(str(img), 2048) == hashlib.sha256(f"{img}\x1f{version}\x1f2048".encode()).digest()
    # A file name with a byte that is not UTF-8 (os.fsdecode keeps it as a lone surrogate):
    # still a pre-key, its bytes hashed as they are (utf-8 with surrogatepass).
    raw = os.path.join(os.fsencode(tmp_path), b"b\xff.png")
    with open(raw, "wb") as f:
        f.write(b"y" * 3)
    uri = os.fsdecode(raw)
    st = os.stat(raw)
    version = f"size=3;mtime={st.st_mtime};created={st.st_ctime};ino={st.st_ino}"
    want = hashlib.sha256(os.fsencode(tmp_path) + b"/b\xed\xb3\xbf.png\x1f" + f"{version}\x1f2048".encode()).digest()
    assert prekey.prekey_of(uri, 2048) == want  # U+DCFF in utf-8 with surrogatepass: ed b3 bf


def test_prekeys_of_one_uri_is_its_prekey(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    got = prekey.prekeys_of([str(img)], 512)
    assert got == {str(img): prekey.prekey_of(str(img), 512)} and got[str(img)] is not None
    assert got != prekey.prekeys_of([str(img)], 2048)  # the max side is in the key
    assert prekey.prekeys_of([], 512) == {}


def _most_in_flight(monkeypatch, n: int, target: int) -> int:
    """``prekeys_of`` of n URIs with ``prekey_of`` replaced by a call that waits (up to 1 s)
    until ``target`` calls are inside at once or every call has started; checks the keys
    and returns the most calls that were inside at once."""
    import threading

    cond = threading.Condition()
    state = {"in": 0, "most": 0, "started": 0}

    def fake(uri, max_side):
        with cond:
            state["in"] += 1
            state["started"] += 1
            state["most"] = max(state["most"], state["in"])
            cond.notify_all()
            cond.wait_for(lambda: state["in"] >= target or state["started"] == n, timeout=1.0)
            state["in"] -= 1
        return hashlib.sha256(f"{uri}|{max_side}".encode()).digest()

    monkeypatch.setattr(prekey, "prekey_of", fake)
    keys = prekey.prekeys_of([f"/img/{i}.png" for i in range(n)], 2048)
    assert keys == {f"/img/{i}.png": hashlib.sha256(f"/img/{i}.png|2048".encode()).digest() for i in range(n)}
    return state["most"]


def test_metadata_requests_in_flight_together_up_to_16(monkeypatch):
    # Two URIs: both requests at once, not one after the other.
    assert _most_in_flight(monkeypatch, 2, 2) == 2
    # Twenty: METADATA_REQUESTS_IN_FLIGHT = 16 at once, never more (each waits for a 17th
    # that cannot start until one ends), whatever the pool's CPU-dependent default size.
    assert _most_in_flight(monkeypatch, 20, 17) == 16


def _entry(i: int, uri: str) -> tuple[str, bytes, str, int, int]:
    return uri, bytes([i]) * 31 + b"\x00", f"{i:064x}", 100 + i, 200 + i


def test_prekeys_written_per_partition_and_looked_up_in_the_images_partition(tmp_path):
    # Partitions: the first 2 hex digits of sha256 of the URI (/img/a.png b2, /img/c.png 85).
    url = str(tmp_path / "cache")
    uris = ["/img/a.png", "/img/c.png", "/img/x.png"]
    part = {u: hashlib.sha256(u.encode()).hexdigest()[:2] for u in uris}
    prekey.write(url, "r1-u1", [_entry(1, uris[0]), _entry(2, uris[1]), _entry(3, uris[0])])
    assert _files(tmp_path / "cache" / "prekeys") == {f"part={part[uris[0]]}": ["r1-u1.parquet"],
                                                      f"part={part[uris[1]]}": ["r1-u1.parquet"]}
    t = pq.read_table(str(tmp_path / "cache" / "prekeys" / f"part={part[uris[0]]}" / "r1-u1.parquet"))
    assert t.schema == prekey.PREKEY_SCHEMA
    assert t.to_pydict() == {"prekey": [bytes([1]) * 31 + b"\x00", bytes([3]) * 31 + b"\x00"],
                             "sha256": [f"{1:064x}", f"{3:064x}"], "width": [101, 103], "height": [201, 203]}
    tok = uuid.uuid4().hex
    assert prekey.lookup(url, uris[0], bytes([3]) * 31 + b"\x00", tok) == (f"{3:064x}", 103, 203)
    assert prekey.lookup(url, uris[0], bytes([1]) * 31 + b"\x00", tok) == (f"{1:064x}", 101, 201)
    assert prekey.lookup(url, uris[1], bytes([2]) * 31 + b"\x00", tok) == (f"{2:064x}", 102, 202)
    # Only the image's own partition is read: image a's key is not found under image c.
    assert prekey.lookup(url, uris[1], bytes([1]) * 31 + b"\x00", tok) is None
    assert prekey.lookup(url, uris[0], bytes([2]) * 32, tok) is None
    assert prekey.lookup(url, uris[2], bytes([1]) * 32, tok) is None  # a partition never written
    # The default token is the "" pass: one memo for both spellings (read once).
    assert prekey.lookup(url, uris[1], bytes([2]) * 31 + b"\x00") == (f"{2:064x}", 102, 202)
    prekey.write(url, "r1-u0", [_entry(5, uris[1])])
    assert prekey.lookup(url, uris[1], bytes([5]) * 31 + b"\x00", "") is None
    # Memoised per pass: what a later unit writes is seen by the next pass (token).
    prekey.write(url, "r1-u2", [_entry(4, uris[0])])
    assert prekey.lookup(url, uris[0], bytes([4]) * 31 + b"\x00", tok) is None
    assert prekey.lookup(url, uris[0], bytes([4]) * 31 + b"\x00", tok + "-2") == (f"{4:064x}", 104, 204)


def test_prekey_index_lookups():
    # Keys sorted on load; a key written twice answers with its first entry in read order.
    rows = [(9, "i"), (1, "a"), (5, "e"), (1, "z")]
    table = pa.table({"prekey": [bytes([k]) * 32 for k, _ in rows], "sha256": [s for _, s in rows],
                      "width": [k for k, _ in rows], "height": [2 * k for k, _ in rows]}, schema=prekey.PREKEY_SCHEMA)
    idx = prekey.PrekeyIndex(table)
    assert [bytes(k[:1]) for k in idx.keys] == [b"\x01", b"\x01", b"\x05", b"\x09"]
    assert idx.get(bytes([1]) * 32) == ("a", 1, 2)
    assert idx.get(bytes([5]) * 32) == ("e", 5, 10)
    assert idx.get(bytes([9]) * 32) == ("i", 9, 18)
    assert idx.get(bytes([0]) * 32) is None and idx.get(bytes([7]) * 32) is None
    assert idx.get(bytes([200]) * 32) is None  # beyond the last key
    # A table of several chunks, the second sliced (offsets into the key buffer).
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(2, 2)])
    idx = prekey.PrekeyIndex(chunked)
    assert idx.get(bytes([9]) * 32) == ("i", 9, 18) and idx.get(bytes([5]) * 32) == ("e", 5, 10)
    assert idx.get(bytes([1]) * 32) == ("z", 1, 2)
    # 60 rows, 7 distinct keys (row i holds key i % 7 + 1, width i): each key answers with
    # its first row (the stable sort; numpy's default sort of 60 strings is not stable).
    many = pa.table({"prekey": [bytes([i % 7 + 1]) * 32 for i in range(60)], "sha256": [str(i) for i in range(60)],
                     "width": list(range(60)), "height": [0] * 60}, schema=prekey.PREKEY_SCHEMA)
    idx = prekey.PrekeyIndex(many)
    assert [idx.get(bytes([j + 1]) * 32)[1] for j in range(7)] == [0, 1, 2, 3, 4, 5, 6]
    for empty in (None, table.slice(0, 0)):
        idx = prekey.PrekeyIndex(empty)
        assert len(idx.keys) == 0 and idx.keys.dtype == "S32" and idx.rows == []
        assert idx.get(bytes([1]) * 32) is None


def test_prekey_compaction_keeps_the_latest_entry(tmp_path):
    url = str(tmp_path / "cache")
    u = "/img/a.png"
    prekey.write(url, "r1-u1", [_entry(1, u)])
    prekey.write(url, "r2-u1", [(u, bytes([1]) * 31 + b"\x00", "f" * 64, 640, 480)])
    folder = tmp_path / "cache" / "prekeys" / f"part={hashlib.sha256(u.encode()).hexdigest()[:2]}"
    # A third file from another writer, columns in another order.
    pq.write_table(pa.table({"height": pa.array([9], pa.int32()), "width": pa.array([8], pa.int32()),
                             "sha256": ["e" * 64], "prekey": pa.array([bytes([2]) * 32], pa.binary(32))}),
                   str(folder / "r3-u1.parquet"))
    # Before compaction the three files are read together, through PREKEY_SCHEMA.
    assert prekey.lookup(url, u, bytes([2]) * 32, uuid.uuid4().hex) == ("e" * 64, 8, 9)
    assert prekey.compact(url) == {"partitions": 1, "files_removed": 3}
    assert len(list(folder.glob("*.parquet"))) == 1
    tok = uuid.uuid4().hex
    assert prekey.lookup(url, u, bytes([1]) * 31 + b"\x00", tok) == ("f" * 64, 640, 480)
    assert prekey.lookup(url, u, bytes([2]) * 32, tok) == ("e" * 64, 8, 9)
