"""Real process death while a client sends events, cancels and restarts at random moments.

Each life starts ``tests/procs/sigkill_signals_worker.py``: a LocalNamespace on
one SQLite file plus a driver that starts executions of two workflows (steps
with side effects, fan-out with ``asyncio.gather``, ``wait_for_event``, durable
sleeps, retries, compensation) and sends events, cancels and restarts at random
moments. The process is SIGKILLed at a random moment (mid-step, mid-request,
mid-park: not only between steps) and the next life reopens the file. A last
life pays what is owed (unanswered starts, unacknowledged events) and waits,
bounded, for everything to settle. Judged from the database and the worker's
log (side effects are logged outside the workflow storage):

* at every kill, no unsettled execution is left without an alarm unless it is
  parked on a wait with no event for it and no cancel (stranded otherwise), and
  every acknowledged event is still in the inbox or consumed by a wait;
* in the end every execution settled: completed, or cancelled/failed with its
  compensation completed, and no journal entry is left unfinished (``in_doubt``
  and ``abandoned`` are how a phase's end closes them). A step fails only by the
  documented cap on attempts lost in a row (``RetryPolicy.max_lost_attempts``), and only when
  every lost attempt ran in a life the test killed (a loaded machine can make
  short lives kill the same attempt five times); a compensation stops the same
  way only on the same terms;
* the last life's verdict ("all settled") agrees with its file;
* every acknowledged event reached the result (or the execution was
  cancelled), every acknowledged cancel cancelled, and results are exact;
* no step body completed twice, except attempts the journal records as lost
  (started, never journaled: in doubt at a kill);
* a cancelled or failed execution compensated every step whose body completed
  (the workflows undo ``ctx.step_outputs`` and ``ctx.in_doubt_steps``).

``WORKKIT_SIGKILL_SEED`` fixes the seed (the kill moments and the driver's
choices; the interleavings still vary). ``WORKKIT_SIGKILL_SIGNALS_KILLS``
overrides the kills of the ``slow`` run (default 200).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from procs.sigkill_signals_worker import ORDER_OPS, ORDER_WAITS, Log, payload, read_log

WORKER = Path(__file__).parent / "procs" / "sigkill_signals_worker.py"
SRC = Path(__file__).parent.parent / "src"

UNFINISHED = {"running", "retrying", "sleeping", "waiting"}
"""Entry statuses no settled execution may keep: its phase's end closes them as
``in_doubt`` (an attempt that may have run) or ``abandoned`` (a wait)."""
STARTUP = 30.0
"""Seconds a worker may take to open the file and deliver its first alarms."""
SHOWN = 12
"""Violations shown per kind in the failure message (all are counted)."""


# -- the processes ----------------------------------------------------------------------


def _spawn(db: Path, log: Path, seed: int, life: int, finish: float | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    args = [sys.executable, str(WORKER), str(db), str(log), "--seed", str(seed), "--life", str(life)]
    if finish is not None:
        args += ["--finish", str(finish)]
    # stderr goes to a file: a pipe nobody reads could fill up and stall the worker.
    stderr = open(db.parent / f"stderr-{life}.txt", "w")  # noqa: SIM115
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    finally:
        stderr.close()


def _stderr(db: Path, life: int) -> str:
    return (db.parent / f"stderr-{life}.txt").read_text()[-3000:]


def _wait_ready(proc: subprocess.Popen[str], db: Path, life: int) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP)
    line = proc.stdout.readline() if ready else "(no answer in time)"
    if line.strip() != "READY":
        proc.kill()
        proc.communicate()
        raise AssertionError(f"life {life}: the worker did not start: {line!r}\n{_stderr(db, life)}")


# -- what the database holds ---------------------------------------------------------------


@dataclass
class Execution:
    name: str
    records: dict[str, Any] = field(default_factory=dict)
    alarm: float | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.records.get("meta") or {})

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.records.get("state") or {})

    def entries(self, prefix: str) -> list[dict[str, Any]]:
        return [v for k, v in sorted(self.records.items()) if k.startswith(prefix)]

    def entry(self, prefix: str, name: str) -> dict[str, Any] | None:
        return next((e for e in self.entries(prefix) if e.get("name") == name), None)

    def inbox(self) -> list[dict[str, Any]]:
        return self.entries("e:")

    def brief(self) -> str:
        s = self.state
        ops = [f"{e.get('name')}={e.get('status')}" for e in self.entries("j:") + self.entries("c:")]
        return (
            f"status={s.get('status')} phase={s.get('phase')} waiting_for={s.get('waiting_for')} "
            f"cancel_requested_at={s.get('cancel_requested_at')} compensation={s.get('compensation')} "
            f"alarm={self.alarm} inbox={[r.get('id') for r in self.inbox()]} journal=[{', '.join(ops)}]"
        )


def _read_db(db: Path) -> dict[str, Execution]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT obj, key, value FROM kv").fetchall()
        alarms = dict(conn.execute("SELECT obj, at FROM alarms").fetchall())
    finally:
        conn.close()
    found: dict[str, Execution] = {}
    for obj, key, value in rows:
        found.setdefault(obj, Execution(obj)).records[bytes(key).decode()] = json.loads(value)
    for obj, at in alarms.items():
        found.setdefault(obj, Execution(obj)).alarm = float(at)
    return found


# -- the judgement ------------------------------------------------------------------------


class Verdict:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.violations: dict[str, list[str]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.stranded: set[str] = set()
        self.failed_by_kills: set[str] = set()
        """Executions failed at the lost-attempts cap by kills alone (see ``check_settled``)."""

    def add(self, kind: str, message: str) -> None:
        self.violations[kind].append(message)

    def report(self) -> str:
        lines = [
            f"seed {self.seed} (WORKKIT_SIGKILL_SEED={self.seed} repeats its kill moments and choices): "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        ]
        for kind, messages in sorted(self.violations.items()):
            lines.append(f"== {kind}: {len(messages)}")
            lines += [f"  {m}" for m in messages[:SHOWN]]
        return "\n".join(lines)


def _acked(log: list[dict[str, Any]], kind: str) -> Iterable[dict[str, Any]]:
    return (r for r in log if r["t"] == "ack" and r["k"] == kind and "error" not in r)


def _by_life(log: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every line but the boots, with the life that wrote it."""
    life = -1
    for r in log:
        if r["t"] == "boot":
            life = r["life"]
        else:
            yield life, r


def _last_life(log: list[dict[str, Any]]) -> int:
    """The last life booted: the one the test does not kill."""
    return max((r["life"] for r in log if r["t"] == "boot"), default=-1)


def _runs_by_life(log: list[dict[str, Any]], execution: str, step: str | None) -> dict[int, int]:
    """The life each attempt of ``step`` entered its body in (its ``run`` line), by attempt."""
    return {
        int(r["attempt"]): life
        for life, r in _by_life(log)
        if r["t"] == "run" and r["x"] == execution and r["step"] == step
    }


def _signals_of(log: list[dict[str, Any]], execution: str) -> list[str]:
    """The acknowledged signals of one execution, for failure messages."""
    shown = []
    for life, r in _by_life(log):
        if r["t"] == "ack" and r["x"] == execution and r["k"] in ("event", "cancel"):
            answer = {k: v for k, v in r.items() if k not in ("t", "k", "x")}
            shown.append(f"{r['k']} {answer} (life {life})")
    return shown


def _last_seen(finish: dict[str, Any], execution: str) -> str:
    """What the last life's driver saw of ``execution`` when it judged everything settled
    (``finish``: its verdict's line, empty if it wrote none)."""
    if not finish:
        return "the last life wrote no verdict"
    seen = (finish.get("statuses") or finish.get("unsettled") or {}).get(execution, "not listed")
    return f"the last life saw it {seen!r} (its verdict: settled={finish.get('settled')})"


def _lines_of(log: list[dict[str, Any]], execution: str) -> list[str]:
    """Every log line of ``execution``, by life, for failure messages."""
    shown = []
    for life, r in _by_life(log):
        if r.get("x") == execution:
            line = json.dumps({k: v for k, v in r.items() if k != "x"}, separators=(",", ":"))
            shown.append(f"{life}:{line}")
    return shown[-40:]


def _lost_without_a_kill(
    ex: Execution, log: list[dict[str, Any]], step: str | None, prefix: str = "j:"
) -> list[int]:
    """The attempts of ``step`` (of the phase ``prefix``) the journal records as lost that
    no kill explains: entered (a ``run`` line) in the last life, which the test does not
    kill. (An attempt killed before its body was entered has no line; one killed after its
    ``done`` line and before its journal write is lost too: both are what a kill does.)"""
    entry = ex.entry(prefix, step or "") or {}
    lost = [int(e["attempt"]) for e in entry.get("errors") or [] if e.get("code") == "attempt_lost"]
    ran_in, last = _runs_by_life(log, ex.name, step), _last_life(log)
    return [a for a in lost if ran_in.get(a, -1) == last]


def _compensation_failed_by_kills(ex: Execution, log: list[dict[str, Any]]) -> bool:
    """Whether the compensation failed at the lost-attempts cap of an undo step whose every
    lost attempt ran in a life the test killed."""
    if (ex.state.get("compensation") or {}).get("status") != "failed":
        return False
    failed = next((e for e in ex.entries("c:") if e.get("status") == "failed"), None)
    if failed is None or (failed.get("error") or {}).get("code") != "attempt_lost":
        return False
    return not _lost_without_a_kill(ex, log, failed.get("name"), "c:")


def _step_history(log: list[dict[str, Any]], execution: str, step: str) -> list[str]:
    """Where the attempts of one step ran and completed, by life, for failure messages."""
    shown = []
    for life, r in _by_life(log):
        if r["t"] in ("run", "done") and r["x"] == execution and r["step"] == step:
            shown.append(f"{r['t']} attempt {r['attempt']} (life {life})")
        elif r["t"] == "ack" and r["x"] == execution and r["k"] == "cancel":
            shown.append(f"cancel answered {r.get('cancelled')} (life {life})")
    return shown


def _why_running(log: list[dict[str, Any]], execution: str, step: str, attempt: int) -> str:
    ran_in, life = _runs_by_life(log, execution, step).get(attempt), _last_life(log)
    if ran_in is None:
        return "attempt journaled as running, its body never entered: killed in between? (issue #10 item 6)"
    if ran_in < life:
        return f"attempt in doubt after the kill of life {ran_in}, then never finished (issue #10 item 6)"
    return "attempt started in the last life and never finished: not a kill"


def _why_stranded(ex: Execution, log: list[dict[str, Any]]) -> str:
    """Which known shape a stranding has: a signal answered and then lost in the process
    (issue #10 items 1-2), or one committed without an alarm by a process that died
    before answering (a retry is then answered "duplicate"/"not cancelled" and wakes nothing)."""
    state = ex.state
    answered = {
        ("event", r.get("id")) for r in _acked(log, "event") if r["x"] == ex.name and r.get("accepted")
    }
    answered |= {("cancel", None) for r in _acked(log, "cancel") if r["x"] == ex.name and r.get("cancelled")}
    if state.get("cancel_requested_at") is not None:
        if ("cancel", None) in answered:
            return "an acknowledged cancel that nothing acts on (issue #10 item 2)"
        return "a cancel committed without an alarm, the process died before answering"
    waiting_for = state.get("waiting_for") or []
    pending = [r for r in ex.inbox() if r.get("type") in waiting_for]
    if state.get("status") == "waiting" and pending:
        if all(("event", r.get("id")) in answered for r in pending):
            return "parked on a wait whose acknowledged event is in the inbox (issue #10 item 1)"
        return "an event committed without an alarm while it parked, the process died before answering"
    return "not one of the known shapes"


def check_kill_point(life: int, db: Path, log: list[dict[str, Any]], verdict: Verdict) -> None:
    """With no process alive, whatever has no alarm is only woken by a request."""
    executions = _read_db(db)
    for x, ex in sorted(executions.items()):
        state = ex.state
        if not state or state.get("phase") == "done" or ex.alarm is not None:
            continue
        waiting_for = state.get("waiting_for") or []
        parked_on_wait = (
            state.get("phase") == "main"
            and state.get("status") == "waiting"
            and state.get("cancel_requested_at") is None
            and waiting_for
            and not any(r.get("type") in waiting_for for r in ex.inbox())
        )
        if not parked_on_wait:
            verdict.counts["stranded_at_kills"] += 1
            if x not in verdict.stranded:
                verdict.stranded.add(x)
                verdict.add(
                    "stranded at a kill (unsettled, no alarm, not a plain wait)",
                    f"first at kill {life}: {x}: {_why_stranded(ex, log)}: {ex.brief()}; "
                    f"acknowledged: {_signals_of(log, x)}",
                )
    for r in _acked(log, "event"):
        ex = executions.get(r["x"])
        if not r.get("accepted") or ex is None or ex.state.get("status") == "cancelled":
            continue
        consumed = any(e.get("event_id") == r["id"] for e in ex.entries("j:"))
        if not consumed and not any(i.get("id") == r["id"] for i in ex.inbox()):
            verdict.add(
                "acknowledged event vanished at a kill",
                f"kill {life}: {r['x']}: event {r['id']} neither in the inbox nor consumed: {ex.brief()}",
            )


def _expected_events(requests: dict[str, dict[str, Any]], execution: str) -> list[str]:
    req = requests[execution]
    if req["k"] == "start":
        return [payload(execution, i) for i in ORDER_WAITS]
    cut = ORDER_OPS.index(req["from"])
    source = _expected_events(requests, req["src"])
    return [source[i] if cut > pos else payload(execution, i) for i, pos in ORDER_WAITS.items()]


def check_settled(executions: dict[str, Execution], log: list[dict[str, Any]], verdict: Verdict) -> None:
    finish = next((r for r in reversed(log) if r["t"] == "finish"), {})
    for x, status in sorted((finish.get("stored_unsettled") or {}).items()):
        verdict.add(
            "the last life's views said settled, its file did not",
            f"{x}: stored {status!r}, seen {(finish.get('statuses') or {}).get(x, 'not listed')!r}",
        )
    for x, ex in sorted(executions.items()):
        state = ex.state
        status = state.get("status")
        verdict.counts[f"final_{status}"] += 1
        if state.get("phase") != "done":
            verdict.add(
                "not settled",
                f"{x}: {ex.brief()}; acknowledged: {_signals_of(log, x)}; {_last_seen(finish, x)}; "
                f"its log: {_lines_of(log, x)}",
            )
            continue
        if status != "completed" and (state.get("compensation") or {}).get("status") != "completed":
            if _compensation_failed_by_kills(ex, log):
                # The same cap, on an undo step: the compensation stops there, as documented.
                verdict.counts["compensation_failed_after_lost_attempts"] += 1
                verdict.failed_by_kills.add(x)
            else:
                verdict.add("settled without compensation done", f"{x}: {ex.brief()}")
        if status == "failed" and state.get("cancel_requested_at") is None:  # (else judged with cancels)
            error = state.get("error") or {}
            unkilled = _lost_without_a_kill(ex, log, state.get("failed_step"))
            if error.get("code") == "attempt_lost" and not unkilled:
                # The documented cap (max_lost_attempts in a row): every lost attempt was
                # entered in a life the test killed before the attempt returned.
                verdict.counts["failed_after_lost_attempts"] += 1
                verdict.failed_by_kills.add(x)
            else:
                verdict.add(
                    "failed",
                    f"{x}: {error.get('code')} {error.get('message')} at {state.get('failed_step')}"
                    + (f"; lost attempts no kill explains: {unkilled}" if unkilled else ""),
                )
        for prefix in ("j:", "c:"):
            for e in ex.entries(prefix):
                if e.get("status") in ("in_doubt", "abandoned"):
                    verdict.counts[f"entries_{e.get('status')}"] += 1
                elif e.get("status") == "running":
                    verdict.add(
                        "journal entry left unfinished in a settled execution",
                        f"{x} ({status}): {prefix}{e.get('name')} running attempt {e.get('attempt')}: "
                        f"{_why_running(log, x, e.get('name', ''), int(e.get('attempt') or 0))}; "
                        f"lost={e.get('lost')}; history: {_step_history(log, x, e.get('name', ''))}",
                    )
                elif e.get("status") in UNFINISHED:
                    verdict.add(
                        "journal entry left unfinished in a settled execution",
                        f"{x} ({status}): {prefix}{e.get('name')} {e.get('status')}; {ex.brief()}",
                    )


def check_signals(executions: dict[str, Execution], log: list[dict[str, Any]], verdict: Verdict) -> None:
    requests = {r["x"]: r for r in log if r["t"] == "req" and r["k"] in ("start", "restart")}
    for r in log:
        if r["t"] == "ack" and r["k"] in ("start", "restart", "cancel") and "error" in r:
            # A restart is refused when its cut cannot be kept (a step before it did not
            # complete, or was undone), or while its source is being compensated.
            refused = r["k"] == "restart" and (
                r["error"] == "invalid_request"
                or (r["error"] == "execution_conflict" and r.get("about") == requests[r["x"]]["src"])
            )
            verdict.counts["restarts_refused" if refused else "requests_failed"] += refused or 1
            if not refused:
                verdict.add("request failed", f"{r['k']} {r['x']}: {r['error']} {r.get('message')}")
    for r in _acked(log, "start"):
        verdict.counts["starts"] += 1
        if r["x"] not in executions:
            verdict.add("acknowledged start lost", r["x"])
    for r in _acked(log, "restart"):
        verdict.counts["restarts"] += 1
        ex = executions.get(r["x"])
        req = requests[r["x"]]
        origin = ex.meta.get("restarted_from") if ex else None
        expected = {"execution_id": req["src"], "from_step": req["from"], "kind": "step", "occurrence": 1}
        if origin != expected:
            verdict.add("acknowledged restart lost", f"{r['x']} from {req['src']}/{req['from']}: {origin}")
    accepted: Counter[str] = Counter()
    for r in _acked(log, "event"):
        if not r.get("accepted"):
            verdict.counts["events_duplicate"] += 1
            continue
        verdict.counts["events_accepted"] += 1
        accepted[r["id"]] += 1
        ex = executions.get(r["x"]) or Execution(r["x"])
        status = ex.state.get("status")
        value = (ex.records.get("result") or {}).get("value") or {}
        if status == "completed" and payload(r["x"], int(r["i"])) not in value.get("events", []):
            verdict.add("acknowledged event not in the result", f"{r['x']}: {r['id']}: result {value}")
        elif r["x"] in verdict.failed_by_kills:
            pass  # its events were accepted; the step the kills made fail ended it first
        elif status not in ("completed", "cancelled") and ex.state.get("cancel_requested_at") is None:
            # (A cancel that was recorded answers for the event; its outcome is judged with cancels.)
            verdict.add("acknowledged event not acted on", f"{r['x']}: {r['id']}: {ex.brief()}")
    for ident, n in accepted.items():
        if n > 1:
            verdict.add("event accepted twice under one id", f"{ident}: {n} times")
    for r in _acked(log, "cancel"):
        verdict.counts["cancels_acknowledged"] += bool(r.get("cancelled"))
        ex = executions.get(r["x"]) or Execution(r["x"])
        status = ex.state.get("status")
        if r.get("cancelled") and status != "cancelled":
            why = "a step attempt failed after the cancel: retry abandoned, status failed" * (
                status == "failed"
            )
            verdict.add("acknowledged cancel not acted on", f"{r['x']}: {why} {ex.brief()}")
    for x, ex in sorted(executions.items()):
        value = (ex.records.get("result") or {}).get("value")
        if ex.state.get("status") != "completed" or x not in requests:
            continue
        expected: Any = (
            {"events": _expected_events(requests, x)}
            if requests[x]["wf"] == "order"
            else {"parts": 3, "nudge": "none"}
        )
        if value != expected:
            verdict.add("wrong result", f"{x}: {value} != {expected}")


def check_steps(executions: dict[str, Execution], log: list[dict[str, Any]], verdict: Verdict) -> None:
    """Each step body completes once, except attempts the journal records as lost."""
    completions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in log:
        if r["t"] == "done":
            completions[(r["x"], r["step"])].append(int(r["attempt"]))
    for (x, step), attempts in sorted(completions.items()):
        verdict.counts["step_bodies_completed"] += len(attempts)
        prefix = "c:" if step.startswith("undo-") else "j:"
        entry = executions[x].entry(prefix, step) if x in executions else None
        where = f"{x}/{prefix}{step}"
        if entry is None:
            verdict.add("step body completed without a journal entry", f"{where}: attempts {attempts}")
            continue
        for attempt, n in Counter(attempts).items():
            if n > 1:
                verdict.add("step attempt completed twice", f"{where}: attempt {attempt} x{n}; entry {entry}")
        if entry.get("restored_from") or entry.get("reused_from"):
            verdict.add("restored or reused step ran", f"{where}: attempts {attempts}; entry {entry}")
            continue
        lost = {e.get("attempt") for e in entry.get("errors") or [] if e.get("code") == "attempt_lost"}
        journaled = entry.get("attempt") if entry.get("status") == "completed" else None
        # A body that completed in the attempt journaled ``in_doubt`` (or still ``running``)
        # ran once: compensation answers for it (or the entry is judged unfinished).
        unjournaled = entry.get("attempt") if entry.get("status") in ("running", "in_doubt") else None
        for attempt in sorted(set(attempts)):
            if attempt in (journaled, unjournaled):
                continue
            if attempt in lost:
                verdict.counts["in_doubt_reruns"] += 1
            else:
                verdict.add(
                    "journaled step re-run",
                    f"{where}: attempt {attempt} completed; journal {entry.get('status')} attempt "
                    f"{entry.get('attempt')}, lost attempts {sorted(lost)}",
                )
        if journaled is not None and journaled not in attempts:
            verdict.add("journaled attempt never completed", f"{where}: {journaled} not in {attempts}")
    lives: dict[str, set[int]] = defaultdict(set)
    for life, r in _by_life(log):
        if r["t"] == "run":
            lives[r["x"]].add(life)
    verdict.counts["executions_interrupted"] = sum(len(seen) > 1 for seen in lives.values())
    for ex in executions.values():
        for e in ex.entries("j:") + ex.entries("c:"):
            verdict.counts["lost_attempts"] += sum(
                1 for err in e.get("errors") or [] if err.get("code") == "attempt_lost"
            )
    # A cancelled or failed execution must undo every side effect that happened.
    for x, ex in sorted(executions.items()):
        if ex.state.get("status") not in ("cancelled", "failed") or _compensation_failed_by_kills(ex, log):
            continue
        undone = {e["name"][len("undo-") :] for e in ex.entries("c:") if e.get("status") == "completed"}
        done = {step for (y, step) in completions if y == x and not step.startswith("undo-")}
        if done - undone:
            verdict.add(
                "side effect never compensated",
                f"{x} ({ex.state.get('status')}): bodies completed for {sorted(done - undone)} "
                f"but compensation undid {sorted(undone)}; {ex.brief()}",
            )


# -- the loop ---------------------------------------------------------------------------


def run_sigkill_loop(tmp_path: Path, kills: int, finish_seconds: float) -> Verdict:
    seed = int(os.environ.get("WORKKIT_SIGKILL_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    db, log_path = tmp_path / "runtime.db", tmp_path / "driver.log"
    verdict = Verdict(seed)
    print(f"sigkill-signals seed {seed}: {kills} kills")
    for life in range(kills):
        proc = _spawn(db, log_path, seed, life)
        _wait_ready(proc, db, life)
        time.sleep(rng.uniform(0.02, 0.7))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            verdict.add("worker exited by itself", f"life {life}: {proc.returncode}\n{_stderr(db, life)}")
        verdict.counts["kills"] += 1
        check_kill_point(life, db, read_log(str(log_path)), verdict)

    final = _spawn(db, log_path, seed, kills, finish=finish_seconds)
    _wait_ready(final, db, kills)
    try:
        out, _ = final.communicate(timeout=finish_seconds + 60)
    except subprocess.TimeoutExpired:
        final.kill()
        out, _ = final.communicate()
    if final.returncode != 0:
        verdict.add("did not settle in time", f"exit {final.returncode}: {out[-3000:]}\n{_stderr(db, kills)}")

    log = read_log(str(log_path))
    executions = _read_db(db)
    verdict.counts["executions"] = len(executions)
    check_settled(executions, log, verdict)
    check_signals(executions, log, verdict)
    check_steps(executions, log, verdict)
    print(verdict.report())
    return verdict


def _assert_exercised(verdict: Verdict) -> None:
    """The loop did what it claims: events, cancels and restarts answered, kills mid-execution."""
    for exercised in ("events_accepted", "cancels_acknowledged", "restarts", "executions_interrupted"):
        assert verdict.counts[exercised], f"nothing counted as {exercised}: {verdict.report()}"


def test_events_cancels_and_restarts_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    verdict = run_sigkill_loop(tmp_path, kills=20, finish_seconds=30.0)
    assert not verdict.violations, verdict.report()
    _assert_exercised(verdict)


@pytest.mark.slow
def test_events_cancels_and_restarts_survive_200_sigkills(tmp_path: Path) -> None:
    kills = int(os.environ.get("WORKKIT_SIGKILL_SIGNALS_KILLS", "200"))
    verdict = run_sigkill_loop(tmp_path, kills=kills, finish_seconds=60.0)
    assert not verdict.violations, verdict.report()
    _assert_exercised(verdict)


def test_a_lost_attempt_is_explained_only_by_a_life_the_test_killed() -> None:
    lost = [{"code": "attempt_lost", "attempt": n} for n in (2, 3, 4)]
    ex = Execution("b1.0", {"j:00000004": {"name": "flaky", "errors": lost}})
    log: list[dict[str, Any]] = []
    for life, attempt in ((0, None), (1, 2), (2, None), (3, 4)):
        log.append({"t": "boot", "life": life})
        if attempt is not None:
            log.append({"t": "run", "x": "b1.0", "step": "flaky", "attempt": attempt})
    # 2 ran in life 1 (killed); 3 never entered its body; 4 ran in life 3, the last one.
    assert _lost_without_a_kill(ex, log, "flaky") == [4]
    assert _lost_without_a_kill(ex, [*log, {"t": "boot", "life": 4}], "flaky") == []  # life 3 killed too


def test_a_compensation_failed_at_the_cap_is_explained_only_by_killed_lives() -> None:
    lost = [{"code": "attempt_lost", "attempt": n} for n in (1, 2)]
    failed = {"name": "undo-a", "status": "failed", "errors": lost, "error": lost[-1]}
    records = {"state": {"compensation": {"status": "failed"}}, "c:00000000": failed}
    ex = Execution("o1.0", records)
    ran = [{"t": "run", "x": "o1.0", "step": "undo-a", "attempt": n} for n in (1, 2)]
    killed = [{"t": "boot", "life": 0}, ran[0], {"t": "boot", "life": 1}, ran[1], {"t": "boot", "life": 2}]
    assert _compensation_failed_by_kills(ex, killed)
    assert not _compensation_failed_by_kills(ex, killed[:-1])  # attempt 2 ran in the last life
    other = Execution("o1.0", {**records, "c:00000000": {**failed, "error": {"code": "ValueError"}}})
    assert not _compensation_failed_by_kills(other, killed)


def test_a_line_a_kill_tore_is_skipped_then_cut_by_the_next_life(tmp_path: Path) -> None:
    # Seen under load: the last line ended '{"t":"req","k":"canc' (a write stops between
    # pages at SIGKILL). What it announced never happened: every line precedes its act.
    path = tmp_path / "driver.log"
    path.write_text('{"t":"boot","life":0}\n{"t":"req","k":"canc')
    assert read_log(str(path)) == [{"t": "boot", "life": 0}]
    Log(str(path)).write({"t": "boot", "life": 1})
    assert read_log(str(path)) == [{"t": "boot", "life": 0}, {"t": "boot", "life": 1}]
    assert path.read_text().count("\n") == 2
