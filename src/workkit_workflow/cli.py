"""``workkit-workflow``: inspect and operate the local runtime from a shell.

Works on a local runtime SQLite file (``--db``, default ``./workflows.db``).
``list``, ``show`` and ``journal`` read the executions from the file's
journals themselves, so every execution is there whether or not the app
projected history; ``--history FILE`` reads a history database (the D1
projection's tables) instead. Every read command takes ``--json``.
Commands that drive executions (cancel, resume, restart) need the workflow
definitions: ``--app mymodule[:attr]`` imports them.

One runtime file has one owner. Reading (list, show, serve without ``--app``)
works whatever holds the file. ``cancel`` and ``resume`` open the file
themselves when it is free, and go through its owner when a ``serve --app``
holds it (its address is in ``<db>.lock``); any other owner is an error.

Exit codes: 0 success, 1 failure (not found, refused, runtime error), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO, get_args
from urllib.parse import quote

from .engine._journal import Status
from .errors import WorkflowError
from .history import ExecutionHistory, ExecutionPage, ExecutionRecord, HistoryQuery, LocalD1
from .history._journals import JournalFile
from .history._timeline import Attempt, Row, Timeline, build, error_text, span, when
from .local._lock import DatabaseInUseError, Owner, current_owner

STATUSES: tuple[str, ...] = get_args(Status)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report in one line, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- plumbing -------------------------------------------------------------------


def _journals(args: argparse.Namespace) -> JournalFile | None:
    """The runtime file's journals, read-only; None when ``--history`` was asked
    for, or the file holds only history tables (a copy of the D1 projection)."""
    if args.history:
        return None
    try:
        journals = JournalFile.open(args.db)
    except FileNotFoundError:
        raise CliError(f"no runtime database at {args.db!r} (use --db PATH; run something first)") from None
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {args.db!r}: {exc}") from None
    try:
        if journals.has_journals():
            return journals
        if journals.has_history():
            journals.close()
            return None
    except sqlite3.Error as exc:
        journals.close()
        raise CliError(f"cannot read {args.db!r}: {exc}") from None
    journals.close()
    raise CliError(f"{args.db!r} is not a workkit-workflow runtime file (no journals, no history)")


async def _read_page(args: argparse.Namespace) -> ExecutionPage:
    options: dict[str, Any] = {
        "workflow": args.workflow,
        "status": args.status,
        "since": _instant(args.since, "--since"),
        "until": _instant(args.until, "--until"),
        "limit": args.limit,
        "cursor": args.cursor,
    }
    journals = _journals(args)
    if journals is not None:
        try:
            return journals.list_executions(**options)
        finally:
            journals.close()
    db = _history_db(args)
    try:
        return await HistoryQuery(db).list_executions(**options)
    finally:
        db.close()


async def _read_history(args: argparse.Namespace) -> tuple[ExecutionHistory, Any]:
    """One execution's history, and its result value (None unless it completed)."""
    journals = _journals(args)
    if journals is not None:
        try:
            stored = journals.execution(args.execution_id)
            result = stored.result.get("value") if stored.result else None
            return journals.history(args.execution_id), result
        finally:
            journals.close()
    db = _history_db(args)
    try:
        return await HistoryQuery(db).get_execution(args.execution_id), None
    finally:
        db.close()


def _history_db(args: argparse.Namespace) -> LocalD1:
    path = args.history or args.db
    if not os.path.exists(path):
        raise CliError(f"no runtime database at {path!r} (use --db PATH; run something first)")
    try:
        return LocalD1(path)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {path!r}: {exc}") from None


def _import_app(spec: str | None) -> None:
    if not spec:
        return
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import --app {module_name!r}: {exc}") from None
    if attr and not hasattr(module, attr):
        raise CliError(f"module {module_name!r} has no attribute {attr!r}")


def _instant(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag} must be epoch seconds or an ISO date, not {text!r}", EXIT_USAGE) from None
    return parsed.timestamp()


# -- rendering ------------------------------------------------------------------------

_MARK = {
    "completed": "✓",
    "failed": "✗",
    "lost": "✗",
    "running": "▶",
    "retrying": "↻",
    "abandoned": "⊘",
    "in_doubt": "?",
}


def _mark(status: str) -> str:
    return _MARK.get(status, "…")


def _format_row(row: Row, out: list[str], width: int) -> None:
    kind = "" if row.kind == "step" else f" ({row.kind})"
    attempts = len(row.attempts)
    count = f"{attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    out.append(
        f"  {_mark(row.status)} {(row.name + kind).ljust(width)}  {row.status.ljust(10)}"
        f"{count.ljust(12)}{_took(row.duration_ms).rjust(9)}".rstrip()
    )
    if attempts > 1 or row.error:
        for a in row.attempts:
            out.append(_attempt_line(a))
    for note in row.waits:
        mark = "⊘" if "abandoned" in note else "?" if row.status == "in_doubt" else "⏸"
        out.append(f"      {mark} {note}")


def _attempt_line(a: Attempt) -> str:
    # Unknown durations (a lost attempt never finished) are left out, not shown as "-".
    took = f" {span(a.duration_ms)}" if a.duration_ms is not None else ""
    detail = f"   {a.error}" if a.error else ""
    return f"      attempt {a.number}  {_mark(a.outcome)} {a.outcome.replace('_', ' ')}{took}{detail}"


def _took(ms: float | None) -> str:
    return span(ms) if ms is not None else ""


def format_timeline(timeline: Timeline, result: Any = None) -> str:
    e = timeline.execution
    ran = f"   ran {span(e.duration_ms)}" if e.duration_ms is not None else ""
    out = [
        f"{e.workflow}  {e.execution_id}  [{e.status.upper()}]",
        f"  created {when(e.created_at)}{ran}",
        "",
        f"  {timeline.headline}",
        "",
        "steps:",
    ]
    width = max([len(r.name) + (0 if r.kind == "step" else len(r.kind) + 3) for r in timeline.rows] + [8])
    for row in timeline.main:
        _format_row(row, out, width)
    if not timeline.main:
        out.append("  (none)")
    comp = e.compensation or {}
    if comp or timeline.compensation:
        out += ["", f"compensation: {comp['status']}" if comp.get("status") else "compensation:"]
        for row in timeline.compensation:
            _format_row(row, out, width)
        if comp.get("error"):
            out.append(f"  ✗ {error_text(comp['error'])}")
    if result is not None:
        out += ["", f"result: {json.dumps(result, ensure_ascii=False)}"]
    return "\n".join(out)


def format_journal(entries: Sequence[dict[str, Any]]) -> str:
    """A journal as a table: phase, op, name, kind, status, attempts, errors."""
    if not entries:
        return "(empty journal)"
    head = ("PHASE", "OP", "NAME", "KIND", "STATUS", "ATTEMPTS", "ERRORS")
    rows = [head]
    for e in entries:
        errors = ", ".join(str(x.get("code")) for x in e.get("errors") or [])
        attempt = str(e["attempt"]) if e.get("attempt") else ""
        status = str(e.get("status", ""))
        rows.append(
            (e["phase"], str(e["op"]), str(e.get("name")), str(e.get("kind")), status, attempt, errors)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def format_list(records: Sequence[ExecutionRecord]) -> str:
    if not records:
        return "no executions"
    head = ("EXECUTION", "WORKFLOW", "STATUS", "CREATED", "DURATION", "FAILED STEP / COMPENSATION")
    rows = [head]
    for e in records:
        comp = (e.compensation or {}).get("status")
        note = " / ".join(x for x in (e.failed_step, f"compensation {comp}" if comp else None) if x)
        rows.append((e.execution_id, e.workflow, e.status, when(e.created_at), _took(e.duration_ms), note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "\n".join(
        ("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])) + "  " + r[-1]).rstrip()
        for r in rows
    )


def _record_json(e: ExecutionRecord) -> dict[str, Any]:
    return {k: getattr(e, k) for k in e.__dataclass_fields__}


# -- commands -------------------------------------------------------------------------


async def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    page = await _read_page(args)
    if args.json:
        print(
            json.dumps({"executions": [_record_json(e) for e in page.executions], "cursor": page.cursor}),
            file=out,
        )
    else:
        print(format_list(page.executions), file=out)
        if page.cursor:
            print(f"\nmore: --cursor {page.cursor}", file=out)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    history, result = await _read_history(args)
    if args.json:
        print(
            json.dumps(
                {
                    "execution": _record_json(history.execution),
                    "result": result,
                    "steps": [s.__dict__ for s in history.steps],
                    "events": [e.__dict__ for e in history.events],
                },
                default=str,
            ),
            file=out,
        )
    else:
        print(format_timeline(build(history), result), file=out)
    return EXIT_OK


async def cmd_journal(args: argparse.Namespace, out: TextIO) -> int:
    journals = _journals(args)
    if journals is None:
        raise CliError(
            f"{args.history or args.db!r} holds history only: the journal is in the runtime file (--db)"
        )
    try:
        entries = journals.journal(args.execution_id)
    finally:
        journals.close()
    if args.json:
        print(json.dumps({"execution_id": args.execution_id, "entries": entries}), file=out)
    else:
        print(format_journal(entries), file=out)
    return EXIT_OK


async def _with_runtime(args: argparse.Namespace, action: Any, after: Any = None) -> Any:
    from .client._client import create_durable_workflow
    from .local import LocalNamespace

    history = LocalD1(args.history or args.db)
    try:
        ns = LocalNamespace(args.db, env={"HISTORY_DB": history})
    except DatabaseInUseError as exc:
        history.close()
        raise CliError(str(exc)) from None
    try:
        client = create_durable_workflow(ns, history=history)
        result = await action(client)
        # Let the object finish what the request started (compensation,
        # history delivery) before the process ends.
        await ns.idle(timeout=args.timeout)
        return result if after is None else (result, await after(client))
    finally:
        await ns.close()
        history.close()


def _through_owner(args: argparse.Namespace, owner: Owner, verb: str, body: dict[str, Any]) -> Any:
    """Send a command to the process that owns the runtime file (``serve --app``)."""
    if owner.address is None:
        who = f"process {owner.pid}" if owner.pid is not None else "another process"
        raise CliError(
            f"{args.db!r} is in use by {who}, which takes no commands: stop it, or run your app"
            " under `workkit-workflow serve --app ...` so commands can go through it"
        )
    url = f"{owner.address}/api/executions/{quote(args.execution_id, safe='')}/{verb}"
    wait = min(max(args.timeout, 0.0), 300.0)
    request = urllib.request.Request(
        url,
        data=json.dumps({**body, "wait": wait}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=wait + 60.0) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CliError(_owner_error(exc)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CliError(
            f"{args.db!r} is owned by the server at {owner.address}, which did not answer: {exc}"
        ) from None


def _owner_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"the owning server answered {exc.code} {exc.reason}"


async def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    async def action(client: Any) -> bool:
        return bool(await client.execution(args.execution_id).cancel(args.reason))

    owner = current_owner(args.db)
    if owner is not None:
        changed = bool(_through_owner(args, owner, "cancel", {"reason": args.reason})["cancelled"])
    else:
        changed = await _with_runtime(args, action)
    print(
        f"cancelled {args.execution_id}" if changed else f"{args.execution_id} had already finished", file=out
    )
    return EXIT_OK if changed else EXIT_FAILED


def _waiting_for(args: argparse.Namespace) -> list[str]:
    """What the execution waits for, read from its journal; CliError when the
    event cannot be what it waits for (a typo must not pass as delivered)."""
    journals = JournalFile.open(args.db)
    try:
        state = journals.execution(args.execution_id).state
    finally:
        journals.close()
    status = str(state.get("status"))
    if status in ("completed", "failed", "cancelled"):
        raise CliError(f"{args.execution_id} has already finished ({status}); nothing was delivered")
    waiting = [str(w) for w in state.get("waiting_for") or []]
    if waiting and args.event_type not in waiting and not args.force:
        expected = " or ".join(repr(w) for w in waiting)
        raise CliError(
            f"{args.execution_id} is waiting for {expected}, not {args.event_type!r}; nothing was"
            " delivered (--force sends it anyway: it waits in the inbox until a step waits for it)"
        )
    return waiting


async def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except ValueError as exc:
        raise CliError(f"--payload is not JSON: {exc}", EXIT_USAGE) from None
    waiting = _waiting_for(args)

    async def action(client: Any) -> bool:
        handle = client.execution(args.execution_id)
        return bool(await handle.send_event(args.event_type, payload, event_id=args.event_id))

    async def current_status(client: Any) -> str:
        return str(await client.execution(args.execution_id).status())

    owner = current_owner(args.db)
    if owner is not None:
        event = {"type": args.event_type, "payload": payload, "id": args.event_id}
        answer = _through_owner(args, owner, "event", event)
        accepted, status = bool(answer["accepted"]), str(answer["status"])
    else:
        accepted, status = await _with_runtime(args, action, current_status)
    if not accepted:
        print(f"duplicate event id: {args.execution_id} already has it (status {status})", file=out)
        return EXIT_OK
    note = "" if args.event_type in waiting else " (it was not waiting for it: the event waits in its inbox)"
    print(f"delivered {args.event_type!r} to {args.execution_id}; it is now {status}{note}", file=out)
    return EXIT_OK


async def cmd_restart(args: argparse.Namespace, out: TextIO) -> int:
    try:
        new_input = json.loads(args.input) if args.input is not None else None
    except ValueError as exc:
        raise CliError(f"--input is not JSON: {exc}", EXIT_USAGE) from None
    owner = current_owner(args.db)
    if owner is not None:
        who = f"the server at {owner.address}" if owner.address else f"process {owner.pid or '(unknown)'}"
        raise CliError(f"{args.db!r} is in use by {who}: stop it to restart an execution from the CLI")

    async def action(client: Any) -> str:
        handle = await client.restart(
            args.execution_id, from_step=args.from_step, new_execution_id=args.new_id, input=new_input
        )
        return str(handle.execution_id)

    new_id = await _with_runtime(args, action)
    journals = JournalFile.open(args.db)
    try:
        status = str(journals.execution(new_id).state.get("status"))
    finally:
        journals.close()
    if args.json:
        print(
            json.dumps({"execution_id": new_id, "restarted_from": args.execution_id, "status": status}),
            file=out,
        )
    else:
        print(
            f"restarted {args.execution_id} from step {args.from_step!r} as {new_id}; it is now {status}",
            file=out,
        )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from .history._server import serve, serve_runtime

    if args.app:
        try:
            return asyncio.run(serve_runtime(args.db, args.history or args.db, args.host, args.port, out))
        except DatabaseInUseError as exc:
            raise CliError(str(exc)) from None
    db = _history_db(args)
    db.close()
    return serve(args.history or args.db, args.host, args.port, out)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    try:
        demo = importlib.import_module("workkit_workflow.demo")
    except ImportError:
        raise CliError("the demo is not available in this version") from None
    result = demo.main([])
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workkit-workflow",
        description="Inspect and operate durable workflow executions of the local runtime.",
        epilog="exit codes: 0 success, 1 failure (not found, refused), 2 usage error",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", default="workflows.db", help="local runtime SQLite file (default: %(default)s)"
    )
    common.add_argument("--history", help="history database (default: the --db file)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[common], help="list executions, newest first")
    p.add_argument("--workflow", help="only this workflow")
    p.add_argument("--status", action="append", choices=STATUSES, help="only this status (repeatable)")
    p.add_argument("--since", help="created at or after (epoch seconds or ISO date)")
    p.add_argument("--until", help="created before (epoch seconds or ISO date)")
    p.add_argument("--limit", type=int, default=50, help="page size, 1-200 (default: %(default)s)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("show", parents=[common], help="one execution as a step timeline")
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser(
        "journal",
        aliases=["steps"],
        parents=[common],
        help="one execution's journal entries, outputs included",
    )
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_journal)

    driving = argparse.ArgumentParser(add_help=False)
    driving.add_argument(
        "--app",
        required=True,
        help="module[:attr] defining your workflows (imported so the runtime can drive them)",
    )
    driving.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to let the execution run on (default: %(default)s)",
    )

    p = sub.add_parser("cancel", parents=[common, driving], help="cancel an execution (compensation runs)")
    p.add_argument("execution_id")
    p.add_argument("--reason", help="recorded with the cancellation")
    p.set_defaults(run=cmd_cancel)

    p = sub.add_parser("resume", parents=[common, driving], help="send an event to a waiting execution")
    p.add_argument("execution_id")
    p.add_argument("event_type")
    p.add_argument("--payload", help="event payload as JSON")
    p.add_argument("--event-id", help="idempotency id: a second delivery with it is ignored")
    p.add_argument(
        "--force", action="store_true", help="send it even if the execution waits for another event type"
    )
    p.set_defaults(run=cmd_resume)

    p = sub.add_parser(
        "restart",
        parents=[common, driving],
        help="start a new execution reusing an old one's journal up to a step (after a fix)",
    )
    p.add_argument("execution_id")
    p.add_argument("--from-step", required=True, help="the first step to run again")
    p.add_argument("--new-id", help="the new execution's id (default: a new UUID)")
    p.add_argument("--input", help="new input as JSON (default: the old execution's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_restart)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the timeline pages over HTTP (with --app: also run the runtime and take commands)",
    )
    p.add_argument(
        "--app",
        help="module[:attr] defining your workflows: serve then owns the --db file, runs its"
        " executions and takes `cancel`/`resume` from other shells",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("demo", help="run the demo")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with_replace = getattr(out, "reconfigure", None)
    if with_replace is not None and (out.encoding or "").lower() not in ("utf-8", "utf8"):
        with_replace(errors="replace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.run in (cmd_cancel, cmd_resume, cmd_restart):
            if not os.path.exists(args.db):
                raise CliError(f"no runtime database at {args.db!r} (use --db PATH)")
            _import_app(args.app)
        elif args.run is cmd_serve:
            _import_app(args.app)
        result = args.run(args, out)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except CliError as exc:
        print(f"workkit-workflow: error: {exc}", file=sys.stderr)
        return exc.code
    except WorkflowError as exc:
        print(f"workkit-workflow: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except DatabaseInUseError as exc:  # e.g. the demo's file, held by a serve
        print(f"workkit-workflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, sqlite3.Error) as exc:
        print(f"workkit-workflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
