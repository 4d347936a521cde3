#!/usr/bin/env bash
# The test command: sets up .venv and the npm packages of miniflare/, then runs
# lint, type checks and the whole test suite (Pyodide and workerd tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
(cd miniflare && npm install --no-audit --no-fund --loglevel=error >/dev/null)
echo "== ruff"
.venv/bin/ruff check src tests bench worker
.venv/bin/ruff format --check src tests bench worker
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
# Runtime tests (Pyodide, workerd) fail instead of skipping when their runtime is missing.
export WORKKIT_REQUIRE_RUNTIME=1
exec .venv/bin/python -m pytest "$@"
