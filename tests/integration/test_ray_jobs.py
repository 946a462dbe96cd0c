"""README's Ray Jobs path, for real: `ray start --head` (with the Jobs API) + `ray job submit`.

The head is started from this venv (``ray[default]``, the ``cluster`` extra) with
`--block` in its own process group and stopped by that PGID (never `ray stop`).
The job is submitted with the real client and the shipped
jobs/runtime/runtime_env.yaml; only its install step is replaced by the local
source (the private namespace reaches no package index): the working_dir copy of
this tree is pip-installed without dependencies into Ray's job virtualenv. The
shipped runtime_env sets ``VLLM_*`` variables the driver would also forward: the
job must still succeed, and write its tables where ``output`` says.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from planted import write_case

ROOT = Path(__file__).resolve().parents[2]
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
QUESTION = "Is there cardiomegaly?"
PARAS = ["Is the heart enlarged?", "Is cardiomegaly present?"]
PLANTS = {"Ideal": [2, 2, 2], "Dangerous": [-2, -2, -2], "Fragile": [2, -2, 2], "Worst": [-2, 2, -2]}
HEAD_TIMEOUT_S = 120
PIP_SPEC = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[vllm,s3]"
JOB_TIMEOUT_S = 400

pytestmark = pytest.mark.slow
needs_netns = pytest.mark.skipif(
    os.environ.get("VLM_EVAL_NETNS") != "1",
    reason="a Ray head must stay on loopback: run `make test` (scripts/run-tests.sh, as root), or: "
           "unshare -n bash -c 'ip link set lo up && VLM_EVAL_NETNS=1 .venv/bin/python -m pytest "
           "tests/integration/test_ray_jobs.py'",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_TOKEN_PATH")}
    # A driver-side VLLM_* variable the job's runtime_env sets too: must not conflict.
    # As in an activated venv: the job's `python` is this venv's (the head's own Python).
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="5",
               VLLM_USAGE_STATS_ENABLED="0", VLLM_LOGGING_LEVEL="WARNING")
    return env


@pytest.fixture
def head(tmp_path):
    pytest.importorskip("ray.dashboard.modules.job", reason="the Jobs API needs ray[default] (the cluster extra)")
    pytest.importorskip("aiohttp_cors", reason="the dashboard needs ray[default] (pip install '.[cluster]')")
    temp_dir = tempfile.mkdtemp(prefix="vlmjobs-")  # short: Ray's socket paths must fit in 107 bytes
    port, dash = _free_port(), _free_port()
    log = open(tmp_path / "head.log", "wb")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=3", "--object-store-memory=536870912",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
         # Own agent ports: in the suite another Ray (the session's local one) already holds the
         # default dashboard-agent port, and a head whose agent cannot bind it has no job agent.
         *(f"--{flag}={_free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "metrics-export-port", "runtime-env-agent-port",
                                                   "ray-client-server-port"))],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(), start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + HEAD_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "head.log").read_text(errors="replace")[-3000:]
            ok = subprocess.run([RAY, "job", "list", "--address", url], env=_env(), capture_output=True, timeout=60)
            if ok.returncode == 0:
                break
            assert time.monotonic() < deadline, f"no Jobs API at {url}: {ok.stderr[-2000:]!r}"
            time.sleep(2)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _runtime_env(tmp_path: Path) -> Path:
    """The shipped runtime_env, its install step replaced by the local source (no index here).

    The uploaded working_dir (this tree) is on the job's PYTHONPATH, so the job runs this
    source; the pip step itself (which would clone this 4 GB venv first) is checked without
    Ray in test_runtime_env_pip_spec_installs_the_uploaded_source_tree.
    """
    env = yaml.safe_load((ROOT / "jobs" / "runtime" / "runtime_env.yaml").read_text())
    assert env["pip"]["packages"] == [PIP_SPEC], env["pip"]  # what users get
    del env["pip"]
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(env))
    return path


def _job_file(root: Path, output: str) -> Path:
    job = {
        "name": "rayjobs", "run_id": "rayjobs-1", "output": output,
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "images")},
        "prompts": {"paraphrases": len(PARAS)},
        "models": [{"name": "scripted", "engine": "scripted", "options": {"script": str(root / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "cpus_per_actor": 1, "batch_size": 4},
        "failure": {"max_error_fraction": 0.0},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _submit(url: str, runtime_env: Path, job: Path, sid: str, *extra: str) -> tuple[str, str]:
    """`ray job submit` from the repo root (working_dir: .); returns (final status, logs)."""
    env = _env()
    cmd = [RAY, "job", "submit", "--address", url, "--submission-id", sid, "--runtime-env", str(runtime_env),
           "--no-wait", "--", "python", "jobs/submit.py", str(job), *extra]
    # On a loaded 2-core box (or a fresh venv, compiling Ray's dashboard modules on first import)
    # the head may answer before its job agent is up ("No available agent ... try again later") or
    # miss the client's connection check; either way nothing was submitted. The CLI prints either
    # message on stdout or stderr.
    not_ready = ("Failed to connect to Ray at address", "No available agent to submit job")
    for _ in range(24):
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if res.returncode == 0 or not any(m in res.stdout + res.stderr for m in not_ready):
            break
        time.sleep(5)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    from ray.job_submission import JobStatus, JobSubmissionClient  # status/logs only; submitted by the CLI

    client = JobSubmissionClient(url)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = client.get_job_status(sid)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_job_status(sid)
    logs = client.get_job_logs(sid)
    if not status.is_terminal():
        client.stop_job(sid)
        return "TIMEOUT", logs
    return str(status.value if isinstance(status, JobStatus) else status), logs


@needs_netns
@pytest.mark.timeout(900)
def test_ray_job_submit_with_shipped_runtime_env_succeeds_and_writes_where_output_says(tmp_path, head):
    t0 = time.monotonic()
    planted = write_case(tmp_path, 2, question=QUESTION, paraphrases=PARAS, plants=PLANTS, seed=3, size=24,
                         bad_rows=(), patient_of=lambda i: f"p{i}")
    out = tmp_path / "runs"
    runtime_env = _runtime_env(tmp_path)
    status, logs = _submit(head, runtime_env, _job_file(tmp_path, str(out)), "vlmeval-ok")
    assert status == "SUCCEEDED", logs[-5000:]
    assert "conflict" not in logs
    run = out / "rayjobs-1"
    assert f"run folder: {run}" in logs
    assert "working_dir_files" in logs.split(" from ", 1)[1].splitlines()[0], logs[:2000]  # the uploaded source ran
    quads = pd.read_parquet(run / "quadrants")
    assert dict(zip(quads["sample_id"], quads["quadrant"])) == planted and quads["complete"].all()
    assert (run / "summary.parquet").is_file() and (run / "report.html").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "succeeded"
    ok_s = time.monotonic() - t0

    # A relative output would land in Ray's temporary working_dir copy: refused, and says why.
    status, logs = _submit(head, runtime_env, _job_file(tmp_path, "runs-relative"), "vlmeval-relative")
    assert status == "FAILED", logs[-3000:]
    assert "relative path" in logs and "absolute path" in logs
    assert not (ROOT / "runs-relative").exists()
    print(f"\n[ray jobs] submit -> SUCCEEDED in {ok_s:.1f}s; relative output refused; "
          f"total {time.monotonic() - t0:.1f}s")


def test_runtime_env_pip_spec_installs_the_uploaded_source_tree(tmp_path):
    """What Ray's pip step does with the shipped spec: pip expands the variable in its requirements file."""
    src = tmp_path / "working_dir"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "vlm_eval", src / "vlm_eval", ignore=shutil.ignore_patterns("__pycache__"))
    req = tmp_path / "requirements.txt"
    req.write_text(PIP_SPEC + "\n")
    target = tmp_path / "site"
    env = dict(os.environ, RAY_RUNTIME_ENV_CREATE_WORKING_DIR=str(src), PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--target", str(target), "-r", str(req)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (target / "vlm_eval" / "cli.py").is_file()
    assert [p.name for p in target.glob("vlm_eval-*.dist-info")], list(target.iterdir())
