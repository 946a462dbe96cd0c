"""report.html (and comparison.html) in a real browser: headless Chromium (Debian's ``chromium``).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
it reads commands on fd 3 and writes replies on fd 4, NUL-terminated JSON), so the test
sees every console message, uncaught exception, error log entry and network request
of the page, measures the rendered SVG plots and takes a 1280x2000 screenshot, saved
to ``$VLM_EVAL_ARTIFACTS/report.png`` (default ``<repo>/.cache/artifacts/``).
CI installs the browser with ``apt-get install -y chromium`` (.ci/run).
"""
from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "reduce"))
from reduce_builders import preds, sample, write_run  # noqa: E402

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("VLM_EVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe"]
BASH = shutil.which("bash") or "/bin/bash"
QUADRANT_RGB = {"Ideal": (0x2E, 0x7D, 0x32), "Fragile": (0xF9, 0xA8, 0x25),
                "Dangerous": (0xC6, 0x28, 0x28), "Worst": (0x6A, 0x1B, 0x9A)}
MEASURE_SVG = """JSON.stringify([...document.querySelectorAll('svg:not(.stacked)')].map(s => {
  const b = s.getBoundingClientRect();
  return {w: b.width, h: b.height, marks: s.querySelectorAll('circle, rect, path').length};
}))"""

if not CHROMIUM:
    pytest.skip("browser test needs Chromium: apt-get install -y chromium (CI installs it)", allow_module_level=True)


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium page driven over the DevTools pipe protocol."""

    def __init__(self, user_data_dir: Path, timeout: float = 60.0):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        to_chrome_r, from_chrome_w = _high_fd(to_chrome_r), _high_fd(from_chrome_w)  # never 3 or 4 themselves
        shell = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen([BASH, "-c", shell, "bash", CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}"],
                                     pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self._buf, self._id, self.session = b"", 0, None

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str, width: int = 1280, height: int = 2000) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]["value"]

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def problems(self) -> list[str]:
        """Console output, uncaught exceptions, error log entries, requests leaving the file."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled":
                out.append(f"console.{p.get('type')}: {[a.get('value') for a in p.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('exception', {}).get('description')}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                url = p.get("request", {}).get("url", "")
                if not url.startswith(("file:", "data:", "about:")):
                    out.append(f"network request at view time: {url}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)
        self.proc.stderr.close()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def _artifacts() -> Path:
    path = Path(os.environ.get("VLM_EVAL_ARTIFACTS") or REPO / ".cache" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return _run(tmp_path_factory.mktemp("browser") / "run")


def _run(root: Path) -> str:
    """3 models x 2 datasets, 36 samples each, margins drawn so the configurations differ."""
    from vlm_eval.reduce import reduce_run

    rng = np.random.default_rng(7)
    samples, rows = [], {"medgemma<4b>": [], "llava-med": [], "text-only-prior": []}
    for i in range(72):
        ds, finding = ("padchest", "cardiomegaly") if i % 2 else ("mimic<cxr>", "pleural effusion")
        samples.append(sample(f"s{i}", patient=f"p{i // 2}", dataset=ds, finding=finding, label="yes" if i % 3 else "no"))
        for k, model in enumerate(rows):  # model k: noisier paraphrases, weaker use of the image
            base = rng.normal(1.0, 1.5)
            img = list(base + rng.normal(0, 0.5 + 0.8 * k, 3))
            abl = list(base * (0.3 + 0.5 * k) - (1.5 - k) * np.sign(base) + rng.normal(0, 0.3, 3))
            rows[model] += preds(f"s{i}", img, abl, shared=False)
    run = write_run(root, samples, rows)
    reduce_run(run, n_boot=200, seed=0)
    return run


def _check_png(png: bytes, path: Path) -> None:
    from PIL import Image

    path.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 2000) and len(png) > 20_000
    pixels = np.asarray(image).reshape(-1, 3)
    assert pixels.std(axis=0).max() > 20, "screenshot is (nearly) one colour"
    colours = np.bincount((pixels.astype(np.int64) * [1 << 16, 1 << 8, 1]).sum(1), minlength=1 << 24)
    assert (colours > 0).sum() > 50, "screenshot has almost no distinct colours"
    for quadrant, (r, g, b) in QUADRANT_RGB.items():  # the bar chart's solid bars are on screen
        assert colours[(r << 16) + (g << 8) + b] > 50, f"no {quadrant} bar pixels in {path}"


def test_harness_catches_console_errors_and_network(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><svg width="10" height="10"></svg><script>console.error("boom");'
                   'throw new Error("thrown")</script><img src="http://127.0.0.1:9/x.png"></body></html>')
    browser.open(bad.as_uri(), 400, 300)
    found = "\n".join(browser.problems())
    assert "boom" in found and "thrown" in found and "127.0.0.1:9" in found


def test_report_renders_in_chromium(browser, run):
    from vlm_eval.report import write_report

    path = Path(write_report(run))
    browser.open(path.as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.title").startswith("vlm_eval report")
    plots = json.loads(browser.evaluate(MEASURE_SVG))
    assert len(plots) >= 8  # quadrant bars, 6 margin scatters, flip vs Dangerous
    stacked = json.loads(browser.evaluate(MEASURE_SVG.replace("svg:not(.stacked)", "svg.stacked")))
    assert len(stacked) == 6 and all(p["w"] > 300 and p["marks"] >= 1 for p in stacked), len(stacked)  # the answer bars
    assert all(p["w"] > 100 and p["h"] > 100 and p["marks"] > 3 for p in plots), plots
    text = browser.evaluate("document.body.innerText")
    assert "medgemma<4b>" in text and "mimic<cxr>" in text  # escaped markup shows the literal names
    overflow = browser.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 1280, f"page is {overflow}px wide: horizontal scrolling"
    out = _artifacts()
    shutil.copyfile(path, out / "report.html")
    _check_png(browser.screenshot(), out / "report.png")


EXPLORER_ROWS = """JSON.stringify([...document.querySelectorAll('#samples tbody tr')].map(
  tr => [tr.dataset.model, tr.dataset.sample, tr.dataset.quadrant]))"""


def _select(browser, element_id: str, value: str) -> None:
    browser.evaluate(f"(() => {{ const s = document.getElementById({json.dumps(element_id)}); s.value = "
                     f"{json.dumps(value)}; s.dispatchEvent(new Event('change')); return true; }})()")


def test_report_sample_explorer_filters_and_sorts_in_chromium(browser, run):
    import pandas as pd

    from vlm_eval.reduce import tables
    from vlm_eval.report import write_report

    path = Path(write_report(run))
    browser.open(path.as_uri())
    quad = tables.quadrants(run)
    quad = quad.assign(quadrant=quad["quadrant"].where(quad["complete"].eq(True), "incomplete"))
    shown = json.loads(browser.evaluate(EXPLORER_ROWS))
    assert len(shown) == len(quad) == 216  # every sample of every model, before any filter
    _select(browser, "f-quadrant", "Dangerous")
    shown = json.loads(browser.evaluate(EXPLORER_ROWS))
    want = quad[quad["quadrant"] == "Dangerous"]
    assert 0 < len(want) < len(quad)
    assert sorted((m, s) for m, s, _ in shown) == sorted(zip(want["model"], want["sample_id"]))
    assert {q for _, _, q in shown} == {"Dangerous"}
    assert browser.evaluate("document.getElementById('f-count').textContent").startswith(f"{len(want)} of 216")
    _select(browser, "f-model", "medgemma<4b>")  # filters combine; the escaped name matches the data
    shown = json.loads(browser.evaluate(EXPLORER_ROWS))
    assert sorted(s for _, s, _ in shown) == sorted(want.loc[want["model"] == "medgemma<4b>", "sample_id"])
    # Sorting by the margin with the image (click twice: descending).
    _select(browser, "f-model", "")
    for _ in range(2):
        browser.evaluate("document.querySelector('#samples th[data-key=margin]').click() || true")
    col = list(json.loads(browser.evaluate("JSON.stringify([...document.querySelectorAll('#samples thead th')]"
                                           ".map(th => th.dataset.key))"))).index("margin")
    margins = [float(v) for v in json.loads(browser.evaluate(
        f"JSON.stringify([...document.querySelectorAll('#samples tbody tr')].map(tr => tr.children[{col}].textContent))"))]
    assert margins == sorted(margins, reverse=True) and len(margins) == len(want)
    assert pd.Series(margins).round(3).tolist() == sorted(want["margin"].round(3).tolist(), reverse=True)
    assert browser.problems() == []
    browser.evaluate("document.getElementById('explorer').scrollIntoView() || true")
    _check_explorer_png(browser.screenshot(), _artifacts() / "report-explorer.png")


def _check_explorer_png(png: bytes, path: Path) -> None:
    from PIL import Image

    path.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    r, g, b = QUADRANT_RGB["Dangerous"]
    dangerous = ((pixels[:, 0] == r) & (pixels[:, 1] == g) & (pixels[:, 2] == b)).sum()
    assert dangerous > 500, f"no Dangerous quadrant cells on screen in {path}"


def test_comparison_renders_in_chromium(browser, run, tmp_path):
    from vlm_eval.compare import compare_runs

    b = shutil.copytree(run, tmp_path / "nightly")  # the same run under another name: nothing migrates
    compare_runs([run, str(b)], output=str(tmp_path / "cmp"), n_boot=100)
    browser.open((tmp_path / "cmp" / "comparison.html").as_uri())
    assert browser.problems() == []
    plots = json.loads(browser.evaluate(MEASURE_SVG))
    assert len(plots) == 2 and all(p["w"] > 100 and p["h"] > 100 for p in plots), plots
    _check_png(browser.screenshot(), _artifacts() / "comparison.png")
