"""The nightly CronJob's script (in cluster/kuberay-nightly-cronjob.yaml), run against a fake API server.

A small HTTP server on loopback plays the Kubernetes API for RayJobs (get, create,
list by label, delete). The script must create tonight's RayJob once (a rerun of the
same night creates nothing), and delete finished nightly RayJobs beyond the newest
KEEP_RAYJOBS, never a running one and never one of another schedule.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NIGHTLY = ROOT / "cluster" / "kuberay-nightly-cronjob.yaml"
BASE = "/apis/ray.io/v1/namespaces/evals/rayjobs"
TOKEN = "test-token"


def _configmap() -> dict:
    return next(d for d in yaml.safe_load_all(NIGHTLY.read_text()) if d and d["kind"] == "ConfigMap")


class FakeApi(BaseHTTPRequestHandler):
    jobs: dict[str, dict] = {}
    calls: list[tuple[str, str]] = []

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, code: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401)
            return False
        return True

    def do_GET(self):
        if not self._authorized():
            return
        url = urllib.parse.urlparse(self.path)
        self.calls.append(("GET", url.path))
        if url.path == BASE:
            sel = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
            key, _, value = sel.partition("=")
            items = [j for j in self.jobs.values() if not sel or j["metadata"].get("labels", {}).get(key) == value]
            return self._reply(200, {"items": items})
        name = url.path.rsplit("/", 1)[-1]
        return self._reply(200, self.jobs[name]) if name in self.jobs else self._reply(404)

    def do_POST(self):
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", body["metadata"]["name"]))
        body["metadata"]["creationTimestamp"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.jobs[body["metadata"]["name"]] = body
        self._reply(201, body)

    def do_DELETE(self):
        if not self._authorized():
            return
        name = self.path.rsplit("/", 1)[-1]
        self.calls.append(("DELETE", name))
        self.jobs.pop(name, None)
        self._reply(200)


def _job(name: str, day: int, state: str | None, schedule: str = "nightly") -> dict:
    return {"metadata": {"name": name, "labels": {"vlm-eval/schedule": schedule},
                         "creationTimestamp": f"2026-01-{day:02d}T01:00:00Z"},
            "status": {"jobDeploymentStatus": state} if state else {}}


@pytest.fixture
def api():
    FakeApi.jobs, FakeApi.calls = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run_script(tmp_path: Path, api: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    data = _configmap()["data"]
    sa, template = tmp_path / "sa", tmp_path / "template"
    sa.mkdir(exist_ok=True)
    template.mkdir(exist_ok=True)
    (sa / "token").write_text(token)
    (sa / "namespace").write_text("evals")
    (template / "rayjob.yaml").write_text(data["rayjob.yaml"])
    (template / "nightly.py").write_text(data["nightly.py"])
    env = {"SA_DIR": str(sa), "K8S_API": api, "TEMPLATE_DIR": str(template), "KEEP_RAYJOBS": "3", "PATH": "/usr/bin"}
    return subprocess.run([sys.executable, str(template / "nightly.py")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_nightly_creates_tonights_rayjob_once_and_keeps_three_finished_ones(tmp_path, api):
    old = {f"padchest-nightly-202601{d:02d}": _job(f"padchest-nightly-202601{d:02d}", d, "Complete")
           for d in range(1, 6)}
    old["padchest-nightly-20260106"] = _job("padchest-nightly-20260106", 6, "Failed")
    old["padchest-nightly-20260107"] = _job("padchest-nightly-20260107", 7, "Running")  # still running: kept
    old["other-job"] = _job("other-job", 1, "Complete", schedule="weekly")  # not ours to delete
    FakeApi.jobs.update(old)

    res = _run_script(tmp_path, api)
    assert res.returncode == 0, res.stderr[-2000:]
    tonight = f"padchest-nightly-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"
    created = FakeApi.jobs[tonight]
    assert created["kind"] == "RayJob" and tonight in created["spec"]["entrypoint"]
    assert "RUN_DATE" not in json.dumps(created) and created["spec"]["shutdownAfterJobFinishes"] is True
    # Finished nightly RayJobs: the newest 3 stay (Failed 6th, Complete 5th and 4th); older ones are deleted.
    deleted = sorted(n for m, n in FakeApi.calls if m == "DELETE")
    assert deleted == ["padchest-nightly-20260101", "padchest-nightly-20260102", "padchest-nightly-20260103"]
    assert {"padchest-nightly-20260107", "other-job", tonight} <= set(FakeApi.jobs)

    FakeApi.calls.clear()  # the same night again (a retried CronJob pod): nothing new
    res = _run_script(tmp_path, api)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not [c for c in FakeApi.calls if c[0] in ("POST", "DELETE")], FakeApi.calls


def test_nightly_fails_loudly_when_it_may_not_create(tmp_path, api):
    res = _run_script(tmp_path, api, token="a-token-the-api-refuses")
    assert res.returncode != 0 and "HTTP 401" in res.stderr + res.stdout
    assert not FakeApi.jobs
