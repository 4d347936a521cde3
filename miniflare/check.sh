#!/usr/bin/env bash
# Smoke-check the whole harness (needs `npm install` in this folder first).
# Prints one line per check and "N passed, N failed"; exit 1 on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
pass=0; fail=0
check() {  # name, expected substring, command...
  local name="$1" want="$2"; shift 2
  local t0 out rc; t0=$(date +%s%3N)
  out=$("$@" 2>&1); rc=$?
  if [[ $rc -eq 0 && "$out" == *"$want"* ]]; then
    pass=$((pass+1)); echo "PASS $name ($(( $(date +%s%3N) - t0 )) ms)"
  else
    fail=$((fail+1)); echo "FAIL $name (rc=$rc)"; echo "$out" | tail -30
  fi
}
check "pyodide 0.26.4 demo" PYODIDE_OK node run_pyodide.mjs --js fakes.mjs --main --run demo/demo.py
check "pyodide 0.26.4 ffi probe" PYODIDE_OK node run_pyodide.mjs --js fakes.mjs --main --run demo/probe_ffi.py
if [[ -d node_modules/pyodide-0.27 ]]; then
  check "pyodide 0.27.7 ffi probe" PYODIDE_OK node run_pyodide.mjs --pyodide node_modules/pyodide-0.27 --js fakes.mjs --main --run demo/probe_ffi.py
fi
check "adapter suite, pyodide 0.26.4" " 0 failed" node run_pyodide.mjs --mount ../src --mount pyodide:/tests --mount ../worker:/worker --js cf_runtime.mjs:cf_runtime --main --run pyo_test.py -- /tests
check "example worker under workerd" " 0 failed" python3 workerd/worker_checks.py
check "workerd python worker + JS DO" '"double(21)": 42' workerd/serve.sh demo "$(mktemp -d /tmp/workkit-workerd.XXXX)"
check "wrangler dev python + D1 + DO" '"all().results.to_py()": [{"x": 1' wrangler/dev.sh demo "$(mktemp -d /tmp/workkit-wrangler.XXXX)"
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
