#!/usr/bin/env bash
# The main job: a real durable workflow on the local runtime (no Cloudflare account).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e . 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
exec .venv/bin/python -m workkit_workflow.demo "$@"
