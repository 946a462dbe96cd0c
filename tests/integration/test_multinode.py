"""A real two-node Ray cluster on one machine: `ray start --head` + `ray start --address`.

The worker node alone has the custom resource ``fake_gpu`` (standing in for a GPU);
the job asks ``resources_per_actor: {fake_gpu: 1}``, so its engine actors must be
placed there. The job runs through the CLI in its own process with ``RAY_ADDRESS``
set (the pytest process never joins this cluster, so the session-local Ray of the
other tests is untouched). Every node is started with `--block` in its own process
group and stopped by that PID/PGID (never `ray stop`).

Ray binds loopback only inside a private network namespace, so these tests run only
there (``VLM_EVAL_NETNS=1``, set by scripts/run-tests.sh when it is root).
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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VLM_EVAL_NETNS") != "1",
        reason="multi-node Ray needs a private network namespace to stay on loopback: run `make test` "
               "(scripts/run-tests.sh, as root), or: unshare -n bash -c 'ip link set lo up && "
               "VLM_EVAL_NETNS=1 .venv/bin/python -m pytest tests/integration/test_multinode.py'",
    ),
]

QUESTION = "Is there cardiomegaly?"
PARAS = ["Is the heart enlarged?", "Is cardiomegaly present?"]
PROMPTS = [QUESTION] + PARAS
PLANTS = {"Ideal": [2, 2, 2], "Dangerous": [-2, -2, -2], "Fragile": [2, -2, 2], "Worst": [-2, 2, -2]}
OBJECT_STORE_BYTES = 512 * 2**20
NODE_START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env() -> dict[str, str]:
    """One environment for every Ray process of the cluster (nodes, driver, probes)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="5")
    return env


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the direct children of ``pid`` (from /proc; no psutil needed)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            out.append((int(entry), comm))
    return out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class LocalCluster:
    """`ray start --block` nodes on loopback, each in its own process group."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.temp_dirs: list[str] = []
        self.env = _ray_env()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        temp_dir = tempfile.mkdtemp(prefix=f"vlmray-{name}-")  # short: Ray's socket paths must fit
        self.temp_dirs.append(temp_dir)
        log = open(self.root / f"{name}.log", "wb")
        cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--block", "--num-cpus=1",
               f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={temp_dir}",
               "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, start_new_session=True)
        finally:
            log.close()
        self.nodes[name] = proc
        return proc

    def start_head(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false"])

    def start_worker(self, name: str) -> None:
        self._start(name, [f"--address={self.address}", '--resources={"fake_gpu": 1}'])

    def probe(self, code: str, timeout: float = 60) -> dict:
        """Run ``code`` in a fresh driver connected to the cluster; it prints one JSON line."""
        script = ("import json, logging, ray\n"
                  f"ray.init(address={self.address!r}, logging_level=logging.ERROR, log_to_driver=False)\n"
                  + code + "\nray.shutdown()\n")
        proc = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"probe failed: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def alive_nodes(self) -> list[dict]:
        return self.probe("print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
                          "for n in ray.nodes() if n['Alive']]))")

    def wait_nodes(self, want_fake_gpu: int, timeout: float = NODE_START_TIMEOUT_S) -> list[dict]:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for name, proc in self.nodes.items():
                if proc.poll() is not None and name == "head":
                    raise RuntimeError(f"head exited: {self.log('head')}")
            try:
                nodes = self.alive_nodes()
                if sum(n["resources"].get("fake_gpu", 0) for n in nodes) >= want_fake_gpu:
                    return nodes
                last = nodes
            except Exception as exc:  # noqa: BLE001 - head not up yet
                last = exc
            time.sleep(1)
        raise RuntimeError(f"cluster not ready after {timeout}s: {last!r}\n{self.log('head')}")

    def log(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def raylet_pid(self, name: str) -> int:
        kids = [pid for pid, comm in _children(self.nodes[name].pid) if comm == "raylet"]
        assert kids, f"no raylet under node {name} (pid {self.nodes[name].pid})"
        return kids[0]

    def stop_node(self, name: str, timeout: float = 40) -> None:
        """SIGTERM the node's `ray start` by PID, then reap its whole process group."""
        proc = self.nodes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), f"processes of node {name} survived"

    def stop(self) -> None:
        try:
            for name in [n for n in self.nodes if n != "head"] + [n for n in self.nodes if n == "head"]:
                self.stop_node(name)
        finally:
            for d in self.temp_dirs:
                shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path)
    t0 = time.monotonic()
    try:
        c.start_head()
        c.start_worker("worker1")
        c.wait_nodes(want_fake_gpu=1)
        c.started_s = time.monotonic() - t0
        yield c
    finally:
        t1 = time.monotonic()
        c.stop()
        print(f"\n[multinode] cluster up in {getattr(c, 'started_s', float('nan')):.1f}s, "
              f"stopped in {time.monotonic() - t1:.1f}s")


def _write_case(root: Path, per_quadrant: int) -> dict[str, str]:
    return write_case(root, per_quadrant, question=QUESTION, paraphrases=PARAS, plants=PLANTS, seed=2, size=24,
                      bad_rows=(), patient_of=lambda i: f"p{i}")


def _job_file(root: Path, address: str, batch_size: int, delay_s: float = 0.0) -> Path:
    job = {
        "name": "multinode",
        "run_id": "multinode-1",
        "output": str(root / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "images")},
        "prompts": {"paraphrases": len(PARAS)},
        "models": [{"name": "scripted", "engine": "scripted",
                    "options": {"script": str(root / "script.json"), "delay_s": delay_s}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "cpus_per_actor": 1, "batch_size": batch_size,
                      "resources_per_actor": {"fake_gpu": 1}, "ray_address": address},
        "failure": {"max_error_fraction": 0.0},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _run_cli(cluster: LocalCluster, job: Path) -> subprocess.Popen:
    env = dict(cluster.env, RAY_ADDRESS=cluster.address)
    return subprocess.Popen([sys.executable, "-m", "vlm_eval", "run", str(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = JOB_TIMEOUT_S) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"job did not finish in {timeout}s (an actor waiting for a resource?):\n{out[-4000:]}")
    assert proc.returncode == 0, f"job failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def _check_tables(run: Path, planted: dict[str, str]) -> pd.DataFrame:
    quads = pd.read_parquet(run / "quadrants")
    assert len(quads) == len(planted) and quads["complete"].all()
    assert dict(zip(quads["sample_id"], quads["quadrant"])) == planted
    preds = pd.read_parquet(run / "predictions")
    image = preds[preds["condition"] == "image"]
    counts = image.groupby(["sample_id", "variant"]).size()
    assert len(counts) == len(planted) * len(PROMPTS) and (counts == 1).all(), "a prediction is missing or doubled"
    text = preds[preds["condition"] == "text_only"]
    assert sorted(text["prompt_id"]) == sorted(set(text["prompt_id"])) and len(text) == len(PROMPTS)
    assert json.loads((run / "run.json").read_text())["status"] == "succeeded"
    return quads


@pytest.mark.timeout(480)
def test_engine_actors_run_on_the_gpu_worker_node(tmp_path, cluster):
    t0 = time.monotonic()
    planted = _write_case(tmp_path, per_quadrant=3)
    job = _job_file(tmp_path, cluster.address, batch_size=3)
    out = _finish(_run_cli(cluster, job))
    assert "run folder:" in out
    _check_tables(tmp_path / "runs" / "multinode-1", planted)

    info = cluster.probe(
        "from ray._private.state import actors\n"  # GCS actor table (alive and dead); no dashboard needed
        "print(json.dumps({'actors': [{'cls': a['ActorClassName'], 'node': a['Address']['NodeID'], "
        "'state': a['State']} for a in actors().values()], 'nodes': [{'id': n['NodeID'], "
        "'res': n['Resources'], 'alive': n['Alive']} for n in ray.nodes()]}))")
    gpu_nodes = {n["id"] for n in info["nodes"] if n["res"].get("fake_gpu")}
    other_nodes = {n["id"] for n in info["nodes"]} - gpu_nodes
    assert len(gpu_nodes) == 1 and len(other_nodes) == 1, info["nodes"]
    engine_actors = [a for a in info["actors"] if "MapWorker" in a["cls"]]
    assert engine_actors, f"no Ray Data map actors recorded: {info['actors']}"
    assert {a["node"] for a in engine_actors} == gpu_nodes, engine_actors
    print(f"\n[multinode] job on 2-node cluster: {time.monotonic() - t0:.1f}s; "
          f"{len(engine_actors)} engine actor(s) on worker node {next(iter(gpu_nodes))[:12]}")


@pytest.mark.timeout(540)
def test_worker_raylet_killed_mid_job_then_replaced(tmp_path, cluster):
    t0 = time.monotonic()
    planted = _write_case(tmp_path, per_quadrant=4)  # 16 samples -> 8 image units of 2
    job = _job_file(tmp_path, cluster.address, batch_size=2, delay_s=0.15)
    shard_dir = tmp_path / "runs" / "multinode-1" / "predictions" / "model=scripted"
    n_units = len(planted) // 2 + 1
    proc = _run_cli(cluster, job)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = len(list(shard_dir.glob("shard-*.parquet"))) if shard_dir.exists() else 0
            if done >= 2 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"job ended before the fault:\n{proc.stdout.read()[-3000:]}"
        assert 2 <= done < n_units, f"not mid-job: {done} of {n_units} shards"
        os.kill(cluster.raylet_pid("worker1"), signal.SIGKILL)
        killed_at = time.monotonic()
        cluster.stop_node("worker1")  # reap what is left of the dead node, by its PGID
        time.sleep(max(0.0, 5 - (time.monotonic() - killed_at)))
        cluster.start_worker("worker2")
        _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _check_tables(tmp_path / "runs" / "multinode-1", planted)
    shards = sorted(p.name for p in shard_dir.glob("shard-*.parquet"))
    assert len(shards) == n_units
    print(f"\n[multinode] raylet kill + node replacement job: {time.monotonic() - t0:.1f}s "
          f"(killed after {done} of {n_units} shards)")
