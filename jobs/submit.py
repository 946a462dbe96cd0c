r"""Entry point for `ray job submit`: runs one vlm-eval job on the cluster it is submitted to.

    ray job submit --address http://HEAD:8265 \
        --runtime-env jobs/runtime/runtime_env.yaml \
        -- python jobs/submit.py jobs/padchest-medgemma.yaml --set run_id=padchest-2026-01

The driver runs on the head node with RAY_ADDRESS set by Ray, so `vlm-eval run`
joins this cluster. Extra arguments are passed to `vlm-eval run` unchanged.
Credentials come from the cluster's environment (runtime_env env_vars, Kubernetes
secrets, instance roles); never put them on this command line.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    import vlm_eval
    from vlm_eval.cli import main as cli_main

    # Which install runs (the image's, or the runtime_env's copy of the source tree).
    print(f"vlm-eval {getattr(vlm_eval, '__version__', '?')} from {vlm_eval.__file__}", flush=True)
    return cli_main(["run", *args])


if __name__ == "__main__":
    sys.exit(main())
