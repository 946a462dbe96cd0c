"""Pre-keys: know an image's content hash without fetching it.

A pre-key is ``sha256(uri, version, max_image_side)`` where ``version`` is what the
store says about the object without reading it: its ETag / version id (object
stores) or size + modification time (files, HTTP ``Last-Modified``). A run records
pre-key -> (content sha256, decoded width, height) for every image it fetched
(``CACHE/prekeys``, partitioned like the cache); a later run that finds the same
pre-key knows the image's cache keys, and skips the fetch when every request of the
image is cached. A changed object has a new version, hence a new pre-key: fetched
and rescored. A store that gives no version yields no pre-key: always fetched.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.pipeline import cache_store

PREKEY_SCHEMA = pa.schema([("prekey", pa.binary(32)), ("sha256", pa.string()),
                           ("width", pa.int32()), ("height", pa.int32())])
_VERSION_FIELDS = ("ETag", "etag", "VersionId", "version_id", "generation", "md5Hash")
_TIME_FIELDS = ("mtime", "LastModified", "Last-Modified", "last_modified", "updated")
_LOCAL_FIELDS = ("created", "ino")  # fsspec's LocalFileSystem.info: st_ctime, st_ino
METADATA_REQUESTS_IN_FLIGHT = 16  # per unit: each is a round trip to the store, mostly waiting


def root(cache_url: str) -> str:
    return storage.join(cache_url, "prekeys")


def object_version(info: dict) -> str | None:
    """A string that changes whenever the object changes, from a listing/``info`` entry.

    Local files add their inode and status-change time (``created`` in fsspec: st_ctime) to
    size + mtime: a file replaced by one of the same size with its mtime kept (``cp -p``,
    ``rsync -t``) still gets a new version, since no write leaves st_ctime as it was."""
    for k in _VERSION_FIELDS:
        if info.get(k):
            return f"{k}={info[k]}"
    for k in _TIME_FIELDS:
        if info.get(k):
            local = "".join(f";{f}={info[f]}" for f in _LOCAL_FIELDS if info.get(f) is not None)
            return f"size={info.get('size')};{k}={info[k]}{local}"
    return None


def prekey_of(uri: str, max_side: int) -> bytes | None:
    """The image's pre-key from one metadata request (None: no version, or no answer)."""
    try:
        fs, path = storage.filesystem(uri)
        version = object_version(fs.info(path))
    except Exception:  # noqa: BLE001 - no pre-key only means the image is fetched
        return None
    if version is None:
        return None
    return hashlib.sha256(f"{uri}\x1f{version}\x1f{max_side}".encode("utf-8", "surrogatepass")).digest()


def prekeys_of(uris: list[str], max_side: int) -> dict[str, bytes | None]:
    """``prekey_of`` of every uri, up to METADATA_REQUESTS_IN_FLIGHT metadata requests at
    once: on an object store a unit of a dozen images then waits about one round trip
    for its pre-keys, not a dozen (a nightly run asks for every image of the archive)."""
    if len(uris) <= 1:
        return {u: prekey_of(u, max_side) for u in uris}
    with ThreadPoolExecutor(min(METADATA_REQUESTS_IN_FLIGHT, len(uris)), thread_name_prefix="prekey") as pool:
        return dict(zip(uris, pool.map(lambda u: prekey_of(u, max_side), uris)))


class PrekeyIndex:
    def __init__(self, table: pa.Table | None):
        if table is None or not table.num_rows:
            self.keys = np.array([], dtype="S32")
            self.rows: list = []
            return
        col = table["prekey"].combine_chunks()
        keys = np.frombuffer(col.buffers()[1], dtype="S32")[col.offset:col.offset + len(col)]
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        sha, w, h = (table[c].to_pylist() for c in ("sha256", "width", "height"))
        self.rows = [(sha[i], w[i], h[i]) for i in order]

    def get(self, key: bytes) -> tuple[str, int, int] | None:
        probe = np.array([key], dtype="S32")
        i = int(np.searchsorted(self.keys, probe[0]))
        if i >= len(self.keys) or not (self.keys[i:i + 1] == probe)[0]:
            return None
        return self.rows[i]


def _load(r: str, part: str) -> PrekeyIndex:
    return PrekeyIndex(cache_store.read_part(r, part, PREKEY_SCHEMA, "prekey"))


def lookup(cache_url: str, uri: str, key: bytes, token: str = "") -> tuple[str, int, int] | None:
    idx = cache_store.load_cached(root(cache_url), cache_store.partition_of(uri), _load, token)
    return idx.get(key)


def write(cache_url: str, name: str, entries: list[tuple[str, bytes, str, int, int]]) -> None:
    """Record (uri, prekey, sha256, width, height) entries, one small file per partition."""
    by_part: dict[str, list] = {}
    for uri, key, sha, w, h in entries:
        by_part.setdefault(cache_store.partition_of(uri), []).append((key, sha, w, h))
    for part, rows in by_part.items():
        table = pa.table({"prekey": [r[0] for r in rows], "sha256": [r[1] for r in rows],
                          "width": [r[2] for r in rows], "height": [r[3] for r in rows]}, schema=PREKEY_SCHEMA)
        cache_store.write_part(root(cache_url), part, name, table)


def compact(cache_url: str) -> dict[str, int]:
    return cache_store.compact(root(cache_url), PREKEY_SCHEMA, "prekey")
