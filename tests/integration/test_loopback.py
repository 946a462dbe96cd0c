"""A local run exposes nothing: every Ray listener on loopback, no secrets in Ray's logs.

The suite's own namespace has only 127.0.0.1, where Ray is loopback-only whatever
the code does. So the real `vlm-eval demo` runs in a nested private namespace that
also has a routable-looking address (10.77.0.1, default route through it): there
Ray picks 10.77.0.1 unless told otherwise, as on a real machine. The demo runs
WITHOUT ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` in its environment; ``ss -ltnH`` is
sampled while it runs.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vlm_eval.errors import InputError
from vlm_eval.pipeline import ray_env

ROUTABLE = "10.77.0.1"
SECRET = "leak5ecretpw"
DEMO_TIMEOUT_S = 480
NETNS_SETUP = (f"ip link set lo up && ip addr add {ROUTABLE}/32 dev lo && "
               f"ip route add default dev lo src {ROUTABLE}")


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ss") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def _in_routable_netns(script: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", "bash", "-c", f"{NETNS_SETUP} && {script}"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _clean_env(tmp: Path, ray_tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (ray_env.LOOPBACK_ENV, "RAY_ADDRESS", ray_env.JOB_CONFIG_ENV) and not k.startswith("PYTEST")}
    env.update(RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp / "home"),
               AWS_ENDPOINT_URL=f"http://leakuser:{SECRET}@127.0.0.1:9/")
    (tmp / "home").mkdir()
    return env


@pytest.fixture
def ray_tmp():
    path = tempfile.mkdtemp(prefix="vlmlb-")  # short: Ray's socket paths must fit in 107 bytes
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _local_addresses(line: str) -> str:
    # ss -ltnH: State Recv-Q Send-Q Local:Port Peer:Port [Process]
    return line.split()[3].rsplit(":", 1)[0]


def _is_loopback(addr: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped ::ffff:127.x; '*', 0.0.0.0, [::] and others are not."""
    try:
        ip = ipaddress.ip_address(addr.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="needs root with `unshare -n`, `ip` and `ss` (run `make test` as root)")
def test_loopback_demo_listens_on_loopback_only_and_leaks_no_url_credentials(tmp_path, ray_tmp, vlm_cache):
    pytest.importorskip("transformers")
    env = _clean_env(tmp_path, str(ray_tmp))
    env["VLM_EVAL_CACHE"] = vlm_cache
    # Control: in this namespace Ray on its own would pick the routable address.
    probe = _in_routable_netns(
        f"{sys.executable} -c 'import ray._private.services as s; print(s.node_ip_address_from_perspective())'",
        env, 120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip().splitlines()[-1] == ROUTABLE

    listeners = tmp_path / "ss.txt"
    out = tmp_path / "runs"
    script = (f"{sys.executable} -m vlm_eval demo --output {out} --samples 6 > {tmp_path}/demo.log 2>&1 & "
              "pid=$!; while kill -0 $pid 2>/dev/null; do "
              f"ss -ltnH >> {listeners}; sleep 0.3; done; wait $pid")
    proc = _in_routable_netns(script, env, DEMO_TIMEOUT_S)
    log = (tmp_path / "demo.log").read_text(errors="replace")
    lines = [ln for ln in listeners.read_text().splitlines() if ln.strip()] if listeners.exists() else []
    addrs = {_local_addresses(ln) for ln in lines}
    assert len(lines) > 3, "no Ray listener was ever sampled: the check saw nothing\n" + log[-3000:]
    exposed = sorted(a for a in addrs if not _is_loopback(a))
    assert not exposed, f"listeners beyond loopback: {exposed}"
    assert proc.returncode == 0, log[-4000:] + proc.stderr[-2000:]

    # The endpoint's password is in no Ray log, no run file and not on the console.
    assert SECRET not in log
    for root in (ray_tmp, out):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), f"credentials written to {path}"
    # Quiet console by default: no Ray warnings, worker log lines, progress bars or auth notices. One
    # C++ error-level line of the driver's core worker is known and allowed: Ray logs it for every
    # Ray Data actor pool (constructor arguments in the object store, ray#53727); only
    # RAY_BACKEND_LOG_LEVEL=fatal hides it, which would also empty Ray's own log files.
    ray_lines = [ln for ln in log.splitlines()
                 if re.match(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d", ln) or ln.startswith("(") or "ray." in ln.lower()
                 or "Progress bars" in ln or "auth" in ln.lower()]
    unexpected = [ln for ln in ray_lines if "has constructor arguments in the object store" not in ln]
    assert not unexpected, "\n".join(unexpected)[-3000:]
    assert "units 2/2 (100.0%)" in log and "req/s" in log  # our own progress lines are there


def test_loopback_env_is_set_before_ray_is_imported(monkeypatch):
    """A local run sets the variable even when Ray was imported earlier, and fixes Ray's constant."""
    monkeypatch.delenv(ray_env.LOOPBACK_ENV, raising=False)
    import ray._private.ray_constants as constants

    monkeypatch.setattr(constants, "ENABLE_RAY_CLUSTER", True)
    ray_env.loopback_only()
    assert os.environ[ray_env.LOOPBACK_ENV] == "0" and constants.ENABLE_RAY_CLUSTER is False


def test_loopback_cli_and_run_modules_do_not_import_ray():
    """Nothing on the way from the CLI to ensure_ray imports Ray before the variable is set."""
    code = ("import sys, vlm_eval.cli, vlm_eval.run, vlm_eval.demo, vlm_eval.config, vlm_eval.pipeline.plan, "
            "vlm_eval.pipeline.execute, vlm_eval.reduce, vlm_eval.report, vlm_eval.datasets; "
            "print('ray' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != ray_env.LOOPBACK_ENV}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_leak_local_run_passes_no_runtime_env(monkeypatch):
    """Local workers inherit the raylet's environment: nothing goes through runtime_env (which Ray logs)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://u:{SECRET}@127.0.0.1:9/")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_env.driver_runtime_env(None) is None


def test_leak_cluster_run_refuses_credentialed_endpoint_url(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://u:{SECRET}@s3.example.org")
    with pytest.raises(InputError) as err:
        ray_env.driver_runtime_env("10.0.0.5:6379")
    assert "AWS_ENDPOINT_URL" in str(err.value) and SECRET not in str(err.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.org")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    env = ray_env.driver_runtime_env("10.0.0.5:6379")["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.org" and "AWS_SECRET_ACCESS_KEY" not in env
