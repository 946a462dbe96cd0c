"""Starting or joining Ray: loopback-only and quiet by default.

Local runs (no address) set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray
is imported (Ray reads it at import), which makes every Ray server listen on
127.0.0.1 only: a laptop or CI box never exposes Ray ports. Cluster runs join
``ray_address`` / ``RAY_ADDRESS``; a driver started by ``ray job submit`` joins
the cluster it was submitted to and never re-sets what the job's runtime_env sets.

Console: Ray's own logs, warnings and progress bars only when verbose
(``VLM_EVAL_VERBOSE=1`` or the ``vlm_eval`` logger at INFO or below, i.e. ``-v``).
"""
from __future__ import annotations

import json
import logging
import os
import sys

from vlm_eval.errors import InputError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Set by Ray's job supervisor in the environment of a `ray job submit` driver.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Forwarded to workers of a *cluster* run (a remote raylet has its own environment).
FORWARDED_ENV_PREFIXES = ("AWS_", "VLM_EVAL_", "HF_", "VLLM_", "S3_", "FSSPEC_")
# Never forwarded: Ray's runtime_env agent logs env_vars in plain text (session
# logs, dashboard). Cluster nodes get credentials from their own environment/role.
# One secret rule for the whole package (provenance); H-input's import switch (#12).
from vlm_eval.provenance import SECRET_NAME as _SECRET_NAME, url_has_credentials  # noqa: E402


def verbose() -> bool:
    """Whether Ray's own logs/warnings/progress bars should reach the console."""
    if os.environ.get("VLM_EVAL_VERBOSE", "").strip() not in ("", "0"):
        return True
    return logging.getLogger("vlm_eval").isEnabledFor(logging.INFO)


def loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only. Call before the first ``import ray``.

    If some module imported Ray already, the constant Ray read at import is
    corrected too (children started afterwards read the environment variable).
    """
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def quiet_env() -> None:
    """Environment that keeps Ray's own chatter off the console (before Ray starts)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not verbose():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def job_runtime_env() -> dict | None:
    """The runtime_env of the `ray job submit` job this driver runs in (None outside a job)."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}


def forwarded_env(skip: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Variables a cluster run forwards to its workers (no secrets, no URL credentials)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(FORWARDED_ENV_PREFIXES) and not _SECRET_NAME.search(k) and k not in skip}
    leaking = sorted(k for k, v in env.items() if url_has_credentials(v))
    if leaking:
        raise InputError(
            f"{', '.join(leaking)} holds a URL with credentials (user:password@). A cluster run would "
            "forward it to every worker through Ray's runtime_env, which Ray writes to its logs. Put the "
            "credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the nodes' role) and give the "
            "URL without them."
        )
    return env


def driver_runtime_env(address: str | None) -> dict | None:
    """runtime_env for this driver's ray.init, or None.

    Local: none. Workers inherit the raylet this process starts with our
    environment, and nothing is written to Ray's runtime_env logs. Cluster:
    forwarded variables, minus any key the submitted job's runtime_env sets
    (Ray refuses to merge the same key twice).
    """
    if not address:
        return None
    job_env = job_runtime_env()
    skip = set((job_env or {}).get("env_vars") or {})
    env = forwarded_env(skip)
    return {"env_vars": env} if env else None


def cluster_address(address: str | None) -> str | None:
    """The cluster this run joins (None for a local Ray)."""
    address = address or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


def check_output(output: str, address: str | None) -> None:
    """Refuse a relative local ``output`` on a cluster / `ray job submit` run.

    There it would resolve in each node's (or Ray's temporary working_dir's)
    current folder: tables scattered or deleted with the job, not where asked.
    """
    if "://" in output or os.path.isabs(output):
        return
    if cluster_address(address) or job_runtime_env() is not None:
        raise InputError(
            f"output {output!r} is a relative path, but this run uses a Ray cluster "
            f"({cluster_address(address) or 'ray job submit'}): it would land in a temporary or "
            "per-node folder. Give an absolute path on storage every node shares (e.g. /mnt/shared/runs) "
            "or a URL (s3://bucket/runs)."
        )


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure Ray is up; returns True if this call started it (caller shuts it down)."""
    address = cluster_address(address)
    if not address:
        loopback_only()  # before `import ray`
    quiet_env()
    import ray

    if ray.is_initialized():
        return False
    loud = verbose()
    level = logging.INFO if loud else logging.ERROR
    runtime_env = driver_runtime_env(address)
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=loud, logging_level=level)
    else:
        # Logical CPUs above the core count let the loader tasks run beside a
        # 1-CPU engine actor on small machines; Ray does not pin cores.
        cpus = num_cpus or max(4, os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=loud, logging_level=level, object_store_memory=_object_store_bytes())
    _quiet_ray_data(loud)
    return True


def _object_store_bytes() -> int:
    """Bounded object store for local runs (Ray's default is 30% of RAM)."""
    env = os.environ.get("VLM_EVAL_OBJECT_STORE_MB")
    return int(env) * 2**20 if env else 1024 * 2**20


def _quiet_ray_data(loud: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = loud or bool(os.environ.get("VLM_EVAL_PROGRESS"))
    ctx.print_on_execution_start = loud
    if not loud:
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
