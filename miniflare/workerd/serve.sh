#!/usr/bin/env bash
# Start/stop workerd (miniflare/node_modules, 1.20241112.0) serving config.capnp on a free
# loopback port.
#
#   workerd/serve.sh start [STATE_DIR]   # prints PORT=.. PID=.. COLD_START_MS=..; background
#   workerd/serve.sh stop  [STATE_DIR]
#   workerd/serve.sh demo                # start, curl every route, stop
#
# STATE_DIR (default /tmp/workkit-workerd) holds: port, pid, workerd.log, control, do-storage/.
# Env: CONFIG=path/to/config.capnp (default: config.capnp next to this script),
#      READY_PATH=/hello (path polled until it answers 200), READY_TIMEOUT=60 (seconds).
set -Eeuo pipefail
# pyodide-http comes from PyPI, not vendored (embedded by config.capnp for the probe).
python3 "$(dirname "$0")/../fetch_pyodide_http.py" >/dev/null
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
WORKERD="$root/node_modules/workerd/bin/workerd"
CONFIG="${CONFIG:-$here/config.capnp}"
READY_PATH="${READY_PATH:-/hello}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
cmd="${1:-demo}"
STATE="${2:-/tmp/workkit-workerd}"

now_ms() { date +%s%3N; }

start() {
  [[ -x "$WORKERD" ]] || { echo "serve.sh: $WORKERD missing: run npm install in $root" >&2; exit 2; }
  mkdir -p "$STATE/do-storage"
  if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "serve.sh: already running (pid $(cat "$STATE/pid"))" >&2; exit 1
  fi
  rm -f "$STATE/control" "$STATE/port"
  local t0; t0=$(now_ms)
  # Port 0 = kernel picks a free port; --control-fd reports it:
  #   {"event":"listen","socket":"http","port":NNNNN}
  # (cd so embed paths in the config resolve relative to it)
  ( cd "$(dirname "$CONFIG")" && exec "$WORKERD" serve "$(basename "$CONFIG")" --experimental \
      --socket-addr http=127.0.0.1:0 \
      --directory-path "do-storage=$STATE/do-storage" \
      --control-fd 3 3>"$STATE/control" >"$STATE/workerd.log" 2>&1 ) &
  local pid=$!
  echo "$pid" >"$STATE/pid"
  local port=""
  for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
    kill -0 "$pid" 2>/dev/null || { echo "serve.sh: workerd exited early:" >&2; cat "$STATE/workerd.log" >&2; exit 1; }
    # (|| true: the control file may not exist yet; with pipefail a failing sed would abort)
    port=$(sed -n 's/.*"socket":"http","port":\([0-9]*\).*/\1/p' "$STATE/control" 2>/dev/null | head -1 || true)
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "serve.sh: no listen event after ${READY_TIMEOUT}s" >&2; stop; exit 1; }
  echo "$port" >"$STATE/port"
  local t_listen; t_listen=$(now_ms)
  for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
    if curl -fsS -o /dev/null --max-time 30 "http://127.0.0.1:$port$READY_PATH" 2>/dev/null; then
      echo "PORT=$port PID=$pid LISTEN_MS=$((t_listen - t0)) COLD_START_MS=$(( $(now_ms) - t0 )) STATE=$STATE"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "serve.sh: $READY_PATH never answered 200; log:" >&2; cat "$STATE/workerd.log" >&2; stop; exit 1
}

stop() {
  if [[ -f "$STATE/pid" ]]; then
    local pid; pid=$(cat "$STATE/pid")
    # the subshell exec'd workerd, so $pid is workerd itself
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/pid"
  fi
}

case "$cmd" in
  start) trap 'rc=$?; stop; exit $rc' ERR; start ;;
  stop) stop ;;
  demo)
    trap stop EXIT ERR
    start
    port=$(cat "$STATE/port")
    for p in /hello /pkg /do; do
      echo "== GET $p"; t=$(now_ms)
      curl -sS "http://127.0.0.1:$port$p"; echo; echo "   ($(( $(now_ms) - t )) ms)"
    done
    echo "== POST /echo"; curl -sS -X POST -H 'x-test: 1' --data 'payload' "http://127.0.0.1:$port/echo"; echo
    ;;
  *) echo "usage: $0 start|stop|demo [STATE_DIR]" >&2; exit 2 ;;
esac
