#!/usr/bin/env bash
# Runs the suite with the services it needs. Usage: run-tests.sh PYTHON [pytest args]
set -euo pipefail
PY="$1"; shift
export VLM_EVAL_LABEL_FILES="${VLM_EVAL_LABEL_FILES:-$PWD/.cache/label-files}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
# One cache for the session's tiny models (built once, reused by every test).
export VLM_EVAL_TEST_CACHE="${VLM_EVAL_TEST_CACHE:-$(mktemp -d)}"
exec "$PY" -m pytest -q -ra --durations=15 "$@"
