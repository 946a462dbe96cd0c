#!/usr/bin/env bash
# Runs the suite with the services it needs. Usage: run-tests.sh PYTHON [pytest args]
#
# Where we may (root, `unshare` present), the whole suite runs inside a private
# network namespace with only loopback up: Ray, the S3 server and every test can
# then reach nothing but 127.0.0.1, and multi-node Ray works on loopback.
#
# vLLM running in-process changes the whole process (it pins torch to one thread and
# binds threads to cores), so each test file that runs it in-process gets its own
# pytest process, after the rest.
set -euo pipefail
PY="$1"; shift
export VLM_EVAL_LABEL_FILES="${VLM_EVAL_LABEL_FILES:-$PWD/.cache/label-files}"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
export VLM_EVAL_TEST_CACHE="${VLM_EVAL_TEST_CACHE:-$(mktemp -d)}"
if [ "${VLM_EVAL_NETNS:-0}" != "1" ] && [ "${VLM_EVAL_NO_NETNS:-0}" != "1" ] && unshare -n true 2>/dev/null; then
  export VLM_EVAL_NETNS=1
  exec unshare -n bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$PY" "$@"
fi
[ "${VLM_EVAL_NETNS:-0}" = "1" ] || echo "run-tests: no private network namespace (need root + unshare); tests that need one will skip" >&2
# Files that run vLLM in-process (they set VLLM_ENABLE_V1_MULTIPROCESSING): each in its own process.
mapfile -t INPROC_VLLM < <(grep -l 'VLLM_ENABLE_V1_MULTIPROCESSING' tests/integration/test_*.py)
common=(-q -ra -p no:cacheprovider --durations=25)
ignore=()
for f in "${INPROC_VLLM[@]}"; do ignore+=(--ignore="$f"); done
rc=0
"$PY" -m pytest "${common[@]}" "${ignore[@]}" "$@" || rc=$?
for f in "${INPROC_VLLM[@]}"; do
  rc2=0
  "$PY" -m pytest "${common[@]}" "$f" "$@" || rc2=$?
  # 5 = nothing collected (e.g. -k selected nothing there): not a failure of this run.
  [ "$rc2" = "5" ] && rc2=0
  [ "$rc" = "0" ] && rc="$rc2"
done
exit "$rc"
