#!/usr/bin/env bash
# The test command: sets up .venv and the npm packages of miniflare/, then runs
# lint, type checks and the whole test suite (Pyodide and workerd tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# (The grep drops this machine's pip-config warnings about absent local indexes.)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
(cd miniflare && npm install --no-audit --no-fund --loglevel=error >/dev/null)
# Headless Chromium for the timeline page test: installed where we can (root with
# apt, as in CI); required in CI, skipped with a notice elsewhere.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing chromium (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || true
fi
if command -v chromium >/dev/null || [ "${CI:-}" = "true" ]; then
  export WORKKIT_REQUIRE_BROWSER=1
else
  echo "NOTE: chromium is not installed: the timeline screenshot test will be skipped"
fi
# valgrind for the bench's instruction counts (tests/test_bench_instructions.py): the same.
if ! command -v valgrind >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing valgrind (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind) >/dev/null 2>&1 || true
fi
if command -v valgrind >/dev/null || [ "${CI:-}" = "true" ]; then
  export WORKKIT_REQUIRE_VALGRIND=1
fi
CODE=()
for dir in src tests bench worker; do [ -d "$dir" ] && CODE+=("$dir"); done
echo "== ruff"
.venv/bin/ruff check "${CODE[@]}"
.venv/bin/ruff format --check "${CODE[@]}"
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
# Runtime tests (Pyodide, workerd) fail instead of skipping when their runtime is missing.
export WORKKIT_REQUIRE_RUNTIME=1
exec .venv/bin/python -m pytest "$@"
