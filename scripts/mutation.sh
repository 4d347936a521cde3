#!/usr/bin/env bash
# Mutation testing of the engine modules with mutmut (PyPI), one module at a time,
# against the fast CPython tests ([tool.mutmut] in pyproject.toml says which).
# Slow (minutes per module): not part of .ci/run.
#
#   scripts/mutation.sh                     every engine module, in order
#   scripts/mutation.sh _retry _durations   just these
#   scripts/mutation.sh --score _retry      only report the last run's results
#
# Environment: VENV (default .venv, with the `mutation` extra installed),
# MUTMUT_CHILDREN (parallel mutant runs, default 2), KEEP_MUTANTS=1 to reuse
# mutants/ from an earlier run (tests changed? then do not: mutmut would keep the
# old test-to-function map and the old verdicts).
#
# The score printed per module is killed / (total - equivalent), where a timeout
# counts as killed and the equivalent mutants are those named in docs/mutation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CHILDREN=${MUTMUT_CHILDREN:-2}
ALL=(_retry _durations _journal _values _run _execution)

score_only=0
if [ "${1:-}" = "--score" ]; then
  score_only=1
  shift
fi
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=("${ALL[@]}")

if [ ! -x "$VENV/bin/mutmut" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev,mutation]'
fi

score() {
  # Summarise mutants/…/<module>.py.meta, leaving out the documented equivalents.
  "$VENV/bin/python" - "$1" <<'PY'
import json
import re
import sys
from collections import Counter
from pathlib import Path

module = sys.argv[1]
meta = Path(f"mutants/src/workkit_workflow/{module}.py.meta")
verdicts = json.loads(meta.read_text())["exit_code_by_key"]
docs = Path("docs/mutation.md").read_text() if Path("docs/mutation.md").exists() else ""
equivalent = set(re.findall(r"`(workkit_workflow\.[^`\s]+__mutmut_\d+)`", docs))

named = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", None: "not run"}
named.update({code: "timeout" for code in (24, -24, 152, 255, 36)})
counts: Counter[str] = Counter()
left: list[str] = []
for name, code in sorted(verdicts.items()):
    if name in equivalent:
        counts["equivalent"] += 1
        continue
    verdict = named.get(code, "suspicious")
    counts[verdict] += 1
    if verdict not in ("killed", "timeout"):
        left.append(f"  {verdict:10} {name}")
judged = sum(counts.values()) - counts["equivalent"]
caught = counts["killed"] + counts["timeout"]
print(f"{module}: {caught}/{judged} killed ({100 * caught / max(judged, 1):.1f}%), "
      f"{counts['equivalent']} equivalent excluded; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
print("\n".join(left))
PY
}

if [ "$score_only" = 0 ]; then
  # A fresh copy by default: mutmut caches which tests cover which function.
  [ "${KEEP_MUTANTS:-0}" = 1 ] || rm -rf mutants
  mkdir -p mutants
  for module in "${modules[@]}"; do
    echo "== mutmut: workkit_workflow.$module"
    start=$(date +%s)
    # Quieten mutmut's per-mutant spinner; its last lines name every verdict.
    "$VENV/bin/mutmut" run --max-children "$CHILDREN" "workkit_workflow.$module.*" >"mutants/$module.log" 2>&1 \
      || { tail -n 40 "mutants/$module.log"; exit 1; }
    echo "   $(($(date +%s) - start)) s (log: mutants/$module.log)"
  done
fi
for module in "${modules[@]}"; do
  score "$module"
done
