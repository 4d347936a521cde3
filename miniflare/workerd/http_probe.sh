#!/usr/bin/env bash
# Evidence for NOTES.md item 4: from a Python Worker in workerd 1.20241112.0, does
#  (a) JS fetch() reach a local HTTP server, (b) pyodide_http + urllib (sync XHR) work?
# Starts python3 -m http.server on a free 127.0.0.1 port and workerd (serve.sh), prints JSON, stops both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$(mktemp -d /tmp/workkit-httpprobe.XXXX)"
mkdir -p "$STATE/www"; echo "hello-from-local-http" >"$STATE/www/hello.txt"
hport=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
python3 -m http.server "$hport" --bind 127.0.0.1 --directory "$STATE/www" >"$STATE/http.log" 2>&1 &
hpid=$!
cleanup() { "$here/serve.sh" stop "$STATE/wd" || true; kill "$hpid" 2>/dev/null || true; }
trap cleanup EXIT
"$here/serve.sh" start "$STATE/wd" >/dev/null
wport=$(cat "$STATE/wd/port")
url="http://127.0.0.1:$hport/hello.txt"
echo "== JS fetch from Python: /fetch?url=$url"; curl -sS "http://127.0.0.1:$wport/fetch?url=$url"; echo
echo "== pyodide_http/urllib:   /xhr?url=$url";   curl -sS "http://127.0.0.1:$wport/xhr?url=$url"; echo
