#!/usr/bin/env bash
# Runs the suite with the services it needs. Usage: run-tests.sh PYTHON [pytest args]
#
# Where we may (root, `unshare` present), the whole suite runs inside a private
# network namespace with only loopback up: Ray, the S3 server and every test can
# then reach nothing but 127.0.0.1, and multi-node Ray works on loopback.
set -euo pipefail
PY="$1"; shift
export VLM_EVAL_LABEL_FILES="${VLM_EVAL_LABEL_FILES:-$PWD/.cache/label-files}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
export VLM_EVAL_TEST_CACHE="${VLM_EVAL_TEST_CACHE:-$(mktemp -d)}"
cmd=("$PY" -m pytest -q -ra --durations=20 "$@")
if [ "${VLM_EVAL_NO_NETNS:-0}" != "1" ] && unshare -n true 2>/dev/null; then
  export VLM_EVAL_NETNS=1
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' bash "${cmd[@]}"
fi
echo "run-tests: no private network namespace (need root + unshare); tests that need one will skip" >&2
exec "${cmd[@]}"
