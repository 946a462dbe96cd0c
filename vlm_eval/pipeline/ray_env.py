"""Starting or joining Ray, loopback-only by default.

Local runs (no address) set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray
starts, which makes every Ray server listen on 127.0.0.1 only: a laptop or CI
box never exposes Ray ports. Cluster runs join ``ray_address`` / ``RAY_ADDRESS``.
"""
from __future__ import annotations

import logging
import os
import re

# Forwarded to workers (workers inherit the raylet's environment, not ours).
# Values are never written to run.json or logs.
FORWARDED_ENV_PREFIXES = ("AWS_", "VLM_EVAL_", "HF_", "VLLM_", "S3_", "FSSPEC_")
# Never forwarded: Ray's runtime_env agent logs env_vars in plain text (session
# logs, dashboard). A local Ray's workers inherit them from the raylet this
# process starts; cluster nodes get credentials from their own environment/role.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY)", re.I)


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(FORWARDED_ENV_PREFIXES) and not _SECRET_NAME.search(k)}


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure Ray is up; returns True if this call started it (caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runtime_env = {"env_vars": forwarded_env()}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True,
                 logging_level=logging.WARNING)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Logical CPUs above the core count let the loader tasks run beside a
        # 1-CPU engine actor on small machines; Ray does not pin cores.
        cpus = num_cpus or max(4, os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 runtime_env=runtime_env, logging_level=logging.WARNING,
                 object_store_memory=_object_store_bytes())
    _quiet_ray_data()
    return True


def _object_store_bytes() -> int:
    """Bounded object store for local runs (Ray's default is 30% of RAM)."""
    env = os.environ.get("VLM_EVAL_OBJECT_STORE_MB")
    return int(env) * 2**20 if env else 1024 * 2**20


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(os.environ.get("VLM_EVAL_PROGRESS"))
    ctx.print_on_execution_start = False
