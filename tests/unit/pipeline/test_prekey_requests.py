"""A unit's pre-keys: one metadata request per image, sent together, at a real loopback
HTTP server that counts the HEAD requests it is answering at the same moment."""
from __future__ import annotations

import http.server
import os
import threading
import time

import pytest

from vlm_eval.pipeline import prekey


class _SlowHead(http.server.SimpleHTTPRequestHandler):
    """Answers HEAD after a pause (an object store's round trip) and records how many
    HEAD requests were being answered at once."""

    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0
    heads: list[str] = []

    def do_HEAD(self):  # noqa: N802 - http.server's name
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
            cls.heads.append(self.path)
        try:
            time.sleep(0.25)
            super().do_HEAD()
        finally:
            with cls.lock:
                cls.in_flight -= 1

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture()
def slow_store(tmp_path):
    for i in range(6):
        (tmp_path / f"img{i}.png").write_bytes(b"not really a png %d" % i)
    handler = lambda *a: _SlowHead(*a, directory=str(tmp_path))  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _SlowHead.in_flight, _SlowHead.most_in_flight, _SlowHead.heads = 0, 0, []
    yield tmp_path, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_units_metadata_requests_are_in_flight_together_and_give_the_same_keys(slow_store):
    folder, base = slow_store
    uris = [f"{base}/img{i}.png" for i in range(6)]
    keys = prekey.prekeys_of(uris, 2048)
    assert _SlowHead.most_in_flight >= 2  # sequential requests would never overlap
    assert sorted(_SlowHead.heads) == sorted(f"/img{i}.png" for i in range(6))  # one each, nothing else
    one_by_one = {u: prekey.prekey_of(u, 2048) for u in uris}
    assert keys == one_by_one and all(isinstance(k, bytes) and len(k) == 32 for k in keys.values())
    assert len(set(keys.values())) == 6  # the URI is part of the key

    # a changed object (new Last-Modified) gets a new key; the others keep theirs
    os.utime(folder / "img3.png", (time.time() + 120, time.time() + 120))
    again = prekey.prekeys_of(uris, 2048)
    assert again[uris[3]] != keys[uris[3]]
    assert {u: k for u, k in again.items() if u != uris[3]} == {u: k for u, k in keys.items() if u != uris[3]}


def test_a_store_that_does_not_answer_gives_no_prekey_for_that_image_only(slow_store):
    _, base = slow_store
    uris = [f"{base}/img0.png", f"{base}/missing.png", "/no/such/dir/img.png"]
    keys = prekey.prekeys_of(uris, 2048)
    assert isinstance(keys[uris[0]], bytes)
    assert keys[uris[1]] is None and keys[uris[2]] is None  # fetched (and then reported) by the loader


def test_a_local_file_replaced_with_its_size_and_mtime_kept_gets_a_new_prekey(tmp_path):
    # cp -p / rsync -t keep the mtime; a new image of the same size would otherwise keep the
    # old pre-key, and a nightly run would serve the old image's cached scores for it
    img = tmp_path / "img.png"
    img.write_bytes(b"A" * 64)
    st = os.stat(img)
    before = prekey.prekey_of(str(img), 2048)
    assert prekey.prekey_of(str(img), 2048) == before  # nothing changed: the same key
    replacement = tmp_path / "new.png"
    replacement.write_bytes(b"B" * 64)
    os.replace(replacement, img)  # rsync's way: a new file renamed over the old one
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(img).st_size == st.st_size and os.stat(img).st_mtime_ns == st.st_mtime_ns
    replaced = prekey.prekey_of(str(img), 2048)
    assert replaced != before
    # rewritten in place (same inode), size and mtime restored: st_ctime still moved
    st2 = os.stat(img)
    time.sleep(0.01)
    img.write_bytes(b"C" * 64)
    os.utime(img, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    assert os.stat(img).st_ino == st2.st_ino and os.stat(img).st_mtime_ns == st2.st_mtime_ns
    assert prekey.prekey_of(str(img), 2048) not in (before, replaced)
    assert prekey.prekey_of(str(img), 1024) != prekey.prekey_of(str(img), 2048)  # max side is in the key
