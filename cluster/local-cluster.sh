#!/usr/bin/env bash
# A 2-node Ray cluster on this machine (a CPU head + a worker with a fake GPU),
# for trying multi-node runs locally. Every node is `ray start --block` in the
# background; its PID is kept in the state folder and `down` stops it by that PID
# (never `ray stop`, which would kill every Ray on the host).
#
#   cluster/local-cluster.sh run -- vlm-eval run jobs/my-job.yaml --set output=$PWD/runs \
#       --set resources.resources_per_actor='{fake_gpu: 1}'   (cluster runs need an absolute output)
#       starts the cluster in a private network namespace (root; loopback only),
#       runs the command with RAY_ADDRESS set, stops the cluster.
#   cluster/local-cluster.sh up      # start and leave running (prints RAY_ADDRESS)
#   cluster/local-cluster.sh status
#   cluster/local-cluster.sh down
# Outside a private network namespace Ray listens on all interfaces: use `up` only
# on a machine whose ports are not reachable from outside.
#
# Env: VLM_EVAL_CLUSTER_DIR (state, default .cache/local-cluster), RAY (ray binary),
#      PORT (head GCS port, default 6380), OBJECT_STORE_BYTES (default 512 MiB per node).
set -euo pipefail
STATE="${VLM_EVAL_CLUSTER_DIR:-$PWD/.cache/local-cluster}"
RAY="${RAY:-$(command -v ray || echo .venv/bin/ray)}"
PORT="${PORT:-6380}"
OBJ="${OBJECT_STORE_BYTES:-536870912}"
ADDRESS="127.0.0.1:$PORT"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=5
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS   # a --address worker refuses with it set

start_node() {  # NAME ARGS...
  local name="$1"; shift
  local tmp; tmp="$(mktemp -d /tmp/vlmray-"$name"-XXXXXX)"
  echo "$tmp" > "$STATE/$name.tmpdir"
  setsid "$RAY" start --block --num-cpus=1 --object-store-memory="$OBJ" --temp-dir="$tmp" \
    --node-ip-address=127.0.0.1 --disable-usage-stats "$@" > "$STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

wait_ready() {
  local py; py="$(dirname "$RAY")/python"; [ -x "$py" ] || py=python3
  for _ in $(seq 1 90); do
    if "$py" - "$ADDRESS" <<'PY' 2>/dev/null; then return 0; fi
import logging, sys, ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
ok = sum(n["Resources"].get("fake_gpu", 0) for n in ray.nodes() if n["Alive"]) >= 1
ray.shutdown()
sys.exit(0 if ok else 1)
PY
    sleep 1
  done
  echo "local-cluster: not ready after 90 s; logs in $STATE" >&2
  return 1
}

stop_node() {  # NAME: SIGTERM by PID (the node's own process group), then SIGKILL what is left
  local name="$1" pid
  [ -f "$STATE/$name.pid" ] || return 0
  pid="$(cat "$STATE/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true   # the process group setsid gave this node
  rm -f "$STATE/$name.pid"
  if [ -f "$STATE/$name.tmpdir" ]; then rm -rf "$(cat "$STATE/$name.tmpdir")" "$STATE/$name.tmpdir"; fi
}

up() {
  mkdir -p "$STATE"
  if [ -f "$STATE/head.pid" ] && kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; then
    echo "local-cluster: already up (RAY_ADDRESS=$ADDRESS)"; return 0
  fi
  start_node head --head --port="$PORT" --include-dashboard=false
  start_node worker --address="$ADDRESS" --resources='{"fake_gpu": 1}'
  wait_ready || { down; return 1; }
  echo "local-cluster: up. export RAY_ADDRESS=$ADDRESS RAY_AUTH_MODE=disabled"
}

down() { stop_node worker; stop_node head; echo "local-cluster: down"; }

status() {
  for n in head worker; do
    if [ -f "$STATE/$n.pid" ] && kill -0 "$(cat "$STATE/$n.pid")" 2>/dev/null; then
      echo "$n: running (pid $(cat "$STATE/$n.pid"))"
    else echo "$n: stopped"; fi
  done
}

run() {  # -- CMD...: inside a private network namespace when we may
  [ "${1:-}" = "--" ] && shift
  if [ "${VLM_EVAL_NETNS:-0}" != "1" ] && [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    exec unshare -n bash -c 'ip link set lo up && VLM_EVAL_NETNS=1 exec "$0" run -- "$@"' "$0" "$@"
  fi
  up
  trap down EXIT
  RAY_ADDRESS="$ADDRESS" "$@"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  run) shift; run "$@" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
