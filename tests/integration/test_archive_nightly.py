"""Archive scale (issue 13): one fetch per image, and a nightly run over a grown
manifest fetches only new or changed images — counted at a real loopback HTTP server
(``python -m http.server`` bound to 127.0.0.1, its request log parsed)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow
FINDINGS = {"cardiomegaly": "Is there cardiomegaly?", "effusion": "Is there a pleural effusion?",
            "edema": "Is there pulmonary edema?"}
_GET = re.compile(r'"GET /([^ ]+) HTTP')


class CountingServer:
    def __init__(self, root):
        self.root, self.log = root, root.parent / "http.log"

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", str(self.root)], stderr=open(self.log, "w"),
                                     stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("http.server did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def gets(self) -> Counter:
        return Counter(_GET.findall(self.log.read_text()))


def _image(path, seed: int, size: int = 32) -> str:
    px = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(px, "L").save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images_and_script(folder, n: int) -> tuple[list[str], dict]:
    """``n`` images img0..img{n-1}.png in ``folder`` and a script that answers 1.5 for each
    (by content hash), -2 text-only."""
    folder.mkdir()
    names = [f"img{i}.png" for i in range(n)]
    script = {"with_image": {_image(folder / name, i): {"*": 1.5} for i, name in enumerate(names)},
              "text_only": {"*": -2.0}, "default": 0.5}
    return names, script


def _manifest(root, names: list[str]) -> None:
    # Finding-major, like the label adapters: an image's samples lie far apart.
    rows = [{"sample_id": f"{f}-{n}", "image": n, "question": q, "finding": f, "label": "yes" if i % 2 else "no",
             "patient_id": f"p{i}"} for f, q in FINDINGS.items() for i, n in enumerate(names)]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


def _job(root, server, run_id):
    return validate_job({
        "name": "nightly", "run_id": run_id, "output": str(root / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": server.url},
        "prompts": {"paraphrases": 1}, "conditions": ["image", "text_only", "blank"],
        "models": [{"name": "scripted", "engine": "scripted", "options": {"script": str(root / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 2},
        "failure": {"max_error_fraction": 0.0},
    })


def test_nightly_run_fetches_each_image_once_then_only_new_or_changed_ones(tmp_path, ray_local):
    images = tmp_path / "images"
    names, script = _images_and_script(images, 6)
    (tmp_path / "script.json").write_text(json.dumps(script))
    _manifest(tmp_path, names)
    with CountingServer(images) as server:
        first = run_job(_job(tmp_path, server, "night-1"))
        assert server.gets() == Counter({n: 1 for n in names})  # one fetch per image, 3 findings each
        c1 = first.counts["models"]["scripted"]
        assert c1["images_fetched"] == 6 and c1["distinct_images"] == 6
        # Night 1 may serve a blank of one (prompt, size) from entries an earlier unit of this
        # same run wrote (timing-dependent), never an image request: at most the blank ones.
        n_blank = 6 * len(FINDINGS) * 2  # images x findings x (original + 1 paraphrase)
        assert c1["requests_cached"] <= n_blank

        # Night 2: two new images, and img0 replaced by genuinely different pixels.
        before = server.gets()
        new = ["new0.png", "new1.png"]
        for k, n in enumerate(new):
            script["with_image"][_image(images / n, 100 + k)] = {"*": 1.5}
        changed_sha = _image(images / "img0.png", 999, size=40)
        t = time.time() + 5
        os.utime(images / "img0.png", (t, t))
        script["with_image"][changed_sha] = {"*": -1.0}
        (tmp_path / "script.json").write_text(json.dumps(script))
        _manifest(tmp_path, names + new)
        second = run_job(_job(tmp_path, server, "night-2"))
        night2 = server.gets() - before
    assert night2 == Counter({"new0.png": 1, "new1.png": 1, "img0.png": 1})
    c2 = second.counts["models"]["scripted"]
    assert c2["images_fetched"] == 3 and c2["images_skipped_cached"] == 5
    assert c2["requests_scored"] > 0 and c2["requests_cached"] > 0
    preds = pd.read_parquet(tmp_path / "runs" / "night-2" / "predictions")
    img0 = preds[preds["sample_id"].str.endswith("img0.png") & (preds["condition"] == "image")]
    assert set(img0["image_sha256"]) == {changed_sha}  # rescored from the new object
    quads = pd.read_parquet(tmp_path / "runs" / "night-2" / "quadrants").set_index("sample_id")
    assert len(quads) == 3 * 8 and quads["complete"].all()
    assert (quads.loc[[f"{f}-img0.png" for f in FINDINGS], "margin"] == -1.0).all()
    assert (quads.loc[[f"{f}-img1.png" for f in FINDINGS], "margin"] == 1.5).all()
