#!/usr/bin/env bash
# Mutation testing of the engine modules with mutmut (PyPI), one module at a time,
# against the fast CPython tests ([tool.mutmut] in pyproject.toml says which).
# Slow (minutes per module): not part of .ci/run.
#
#   scripts/mutation.sh                     every engine module, in order
#   scripts/mutation.sh definitions._retry definitions._durations   just these
#   scripts/mutation.sh --score definitions._retry      only report the last run's results
#   SAMPLE=60 scripts/mutation.sh engine.phase._step      a fixed random sample of 60 of the module's mutants
#
# Environment: VENV (default .venv, with the `mutation` extra installed),
# MUTMUT_CHILDREN (parallel mutant runs, default 2), KEEP_MUTANTS=1 to reuse
# mutants/ from an earlier run: its map of which tests reach which function is
# kept (mutmut adds new tests to it, but does not re-map edited ones); every
# mutant of the named modules is run again either way.
#
# The score printed per module is killed / (total - equivalent), where a timeout
# counts as killed and the equivalent mutants are those named in docs/mutation.md.
# The phase runner and the execution have well over a thousand mutants, most of them on paths
# every test crosses: sample them (SAMPLE=n; the sample is seeded, so it repeats).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CHILDREN=${MUTMUT_CHILDREN:-2}
ALL=(definitions._retry definitions._durations definitions._json definitions._values engine._journal
     engine.phase._run engine.phase._operations engine.phase._step engine.phase._attempt
     engine.phase._sleep engine.phase._wait engine.phase._outcome engine._state engine._drive engine._recoveries
     engine._phases engine._requests engine._alarms engine._signals engine._plugins engine._runner engine._children
     engine._execution history._bundle history._capture history._outbox history._recovery
     history._projection)

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
meta = Path(f"mutants/src/workkit_workflow/{module.replace('.', '/')}.py.meta")
verdicts = json.loads(meta.read_text())["exit_code_by_key"]
docs = Path("docs/mutation.md").read_text() if Path("docs/mutation.md").exists() else ""
equivalent = set(re.findall(r"`(workkit_workflow\.[^`\s]+__mutmut_\d+)`", docs))

if any(code is not None for code in verdicts.values()):
    # A sampled or interrupted run: score what was run.
    verdicts = {name: code for name, code in verdicts.items() if code is not None}

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

sample() {
  "$VENV/bin/python" - "$1" "$2" <<'PY'
import json
import random
import sys
from pathlib import Path

module, size = sys.argv[1], int(sys.argv[2])
meta = Path(f"mutants/src/workkit_workflow/{module.replace('.', '/')}.py.meta")
names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
print("\n".join(sorted(random.Random(module).sample(names, min(size, len(names))))))
PY
}

if [ "$score_only" = 0 ]; then
  # A fresh copy by default: mutmut caches which tests reach which function.
  [ "${KEEP_MUTANTS:-0}" = 1 ] || rm -rf mutants
  mkdir -p mutants
  for module in "${modules[@]}"; do
    echo "== mutmut: workkit_workflow.$module"
    start=$(date +%s)
    # mutmut's spinner goes to the log; its last lines name every verdict.
    log="mutants/$module.log"
    : >"$log"
    targets=("workkit_workflow.$module.*")
    if [ -n "${SAMPLE:-}" ]; then
      # A name that matches nothing: mutmut generates the mutants and maps tests
      # to functions, then stops; the sample is drawn from what it generated.
      "$VENV/bin/mutmut" run "workkit_workflow.$module.no_such_mutant" >>"$log" 2>&1 || true
      mapfile -t targets < <(sample "$module" "$SAMPLE" 2>>"$log")
      # No names would make mutmut run every mutant of every module.
      [ ${#targets[@]} -gt 0 ] || { tail -n 40 "$log"; exit 1; }
    fi
    "$VENV/bin/mutmut" run --max-children "$CHILDREN" "${targets[@]}" >>"$log" 2>&1 \
      || { tail -n 40 "$log"; exit 1; }
    echo "   $(($(date +%s) - start)) s (log: mutants/$module.log)"
  done
fi
for module in "${modules[@]}"; do
  score "$module"
done
