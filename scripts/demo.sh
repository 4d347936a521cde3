#!/usr/bin/env bash
# The main job: a real durable workflow on the local runtime (no Cloudflare account).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv (first run only) ..."
  "$PY" -m venv .venv
fi
# Install (editable) only when this checkout's package is not what .venv imports yet, and show
# pip's progress lines meanwhile, so the first run is not silent either.
if ! .venv/bin/python -c 'import sys, workkit_workflow as w; sys.exit(not w.__file__.startswith(sys.argv[1]))' \
    "$PWD/src/" 2>/dev/null; then
  echo "installing workkit-workflow into .venv (first run only) ..."
  .venv/bin/python -m pip install --disable-pip-version-check -e . 2>&1 \
    | { grep -E "^(Collecting|Installing|Successfully)" || true; }
fi
exec .venv/bin/python -m workkit_workflow.demo "$@"
