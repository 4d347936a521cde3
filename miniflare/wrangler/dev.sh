#!/usr/bin/env bash
# wrangler@3.92.0 local dev (offline): Python Worker (src/entry.py) + local D1 (HISTORY_DB)
# + JS Durable Object test double (do-worker/, bound via script_name) in ONE wrangler process
# (multi-config: -c wrangler.toml -c do-worker/wrangler.toml).
#
#   wrangler/dev.sh start [STATE_DIR]   # applies D1 migrations, starts, waits; prints PORT=.. PID=..
#   wrangler/dev.sh stop  [STATE_DIR]
#   wrangler/dev.sh demo                # start, curl /hello /d1 /do, stop
#
# STATE_DIR (default /tmp/workkit-wrangler): port, pid, wrangler.log, state/ (--persist-to),
# registry/ (WRANGLER_REGISTRY_PATH, so runs do not see other wrangler dev sessions).
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
WRANGLER="$root/node_modules/.bin/wrangler"
READY_PATH="${READY_PATH:-/hello}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
cmd="${1:-demo}"
STATE="${2:-/tmp/workkit-wrangler}"
export WRANGLER_SEND_METRICS=false
export WRANGLER_REGISTRY_PATH="$STATE/registry"
export WRANGLER_LOG_PATH="$STATE/logs"
export NO_COLOR=1 FORCE_COLOR=0

now_ms() { date +%s%3N; }
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }

start() {
  [[ -x "$WRANGLER" ]] || { echo "dev.sh: $WRANGLER missing: run npm install in $root" >&2; exit 2; }
  mkdir -p "$STATE"
  if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "dev.sh: already running (pid $(cat "$STATE/pid"))" >&2; exit 1
  fi
  cd "$here"
  local t0; t0=$(now_ms)
  "$WRANGLER" d1 migrations apply HISTORY_DB --local --persist-to "$STATE/state" </dev/null >"$STATE/migrations.log" 2>&1 \
    || { echo "dev.sh: migrations failed:" >&2; cat "$STATE/migrations.log" >&2; exit 1; }
  local t_mig; t_mig=$(now_ms)
  local port inspector; port=$(free_port); inspector=$(free_port)
  # setsid: own process group, so stop can end wrangler and its workerd children together
  setsid "$WRANGLER" dev -c wrangler.toml -c do-worker/wrangler.toml \
      --ip 127.0.0.1 --port "$port" --inspector-port "$inspector" \
      --persist-to "$STATE/state" </dev/null >"$STATE/wrangler.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$STATE/pid"; echo "$port" >"$STATE/port"
  for _ in $(seq 1 $((READY_TIMEOUT * 10))); do
    if curl -fsS -o /dev/null --max-time 30 "http://127.0.0.1:$port$READY_PATH" 2>/dev/null; then
      echo "PORT=$port PID=$pid MIGRATIONS_MS=$((t_mig - t0)) COLD_START_MS=$(( $(now_ms) - t_mig )) STATE=$STATE"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "dev.sh: $READY_PATH never answered 200; log:" >&2; cat "$STATE/wrangler.log" >&2; stop; exit 1
}

stop() {
  if [[ -f "$STATE/pid" ]]; then
    local pid; pid=$(cat "$STATE/pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
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
    for p in /hello /d1 /do; do
      echo "== GET $p"; t=$(now_ms)
      curl -sS "http://127.0.0.1:$port$p"; echo; echo "   ($(( $(now_ms) - t )) ms)"
    done
    ;;
  *) echo "usage: $0 start|stop|demo [STATE_DIR]" >&2; exit 2 ;;
esac
