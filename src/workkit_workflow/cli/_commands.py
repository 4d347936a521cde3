"""The CLI's commands and the plumbing they share to read the runtime file (driving
executions is ``_drive``'s)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import sqlite3
import sys
from datetime import datetime
from typing import Any, TextIO, get_args

from ..engine._journal import Status
from ..history import ExecutionHistory, ExecutionPage, HistoryQuery, LocalD1
from ..history._journals import DAMAGED, JournalFile
from ..history._timeline import build
from ..local._lock import DatabaseInUseError, current_owner
from ._drive import _through_owner, _with_runtime
from ._errors import EXIT_OK, EXIT_USAGE, CliError
from ._render import _record_json, format_journal, format_list, format_timeline, printable

STATUSES: tuple[str, ...] = get_args(Status)

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
    """The history database, opened read-only: readers never change a file."""
    path = args.history or args.db
    if not os.path.exists(path):
        raise CliError(f"no runtime database at {path!r} (use --db PATH; run something first)")
    try:
        db = LocalD1(path, read_only=True)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {path!r}: {exc}") from None
    try:
        tables = {row[0] for row in db.connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        db.close()
        raise CliError(f"cannot read {path!r}: {exc}") from None
    if "wf_executions" not in tables:
        db.close()
        raise CliError(f"{path!r} holds no history tables (wf_executions)")
    return db


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
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # nan would match nothing or everything, inf nothing
            raise CliError(f"{flag} must be epoch seconds or an ISO date, not {text!r}", EXIT_USAGE)
        return seconds
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag} must be epoch seconds or an ISO date, not {text!r}", EXIT_USAGE) from None
    return parsed.timestamp()


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
    damaged = [e.execution_id for e in page.executions if e.status == DAMAGED]
    if damaged:
        # Listed, not fatal: the rest of the file reads, and the command succeeds.
        print(
            printable(f"workkit-workflow: note: the records of {', '.join(damaged)} cannot be read"),
            file=sys.stderr,
        )
    return EXIT_OK


async def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    history, result = await _read_history(args)
    state = _live_state(args)
    if args.json:
        print(
            json.dumps(
                {
                    "execution": _record_json(history.execution),
                    "result": result,
                    "steps": [s.__dict__ for s in history.steps],
                    "events": [e.__dict__ for e in history.events],
                    "state": state,
                },
                default=str,
            ),
            file=out,
        )
    else:
        print(format_timeline(build(history), result), file=out)
        if state:
            print("\nstate:", file=out)
            for key, value in state.items():
                print(printable(f"  {key}: {json.dumps(value, ensure_ascii=False)}"), file=out)
    return EXIT_OK


def _live_state(args: argparse.Namespace) -> dict[str, Any]:
    """The execution's live state from the runtime file (a history copy has none)."""
    journals = _journals(args)
    if journals is None:
        return {}
    try:
        return journals.live_state(args.execution_id)
    finally:
        journals.close()


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
    unlisted = (state.get("waiting_for_count") or 0) > len(waiting)  # it waits for more than it lists
    if waiting and not unlisted and args.event_type not in waiting and not args.force:
        expected = " or ".join(repr(w) for w in waiting)
        raise CliError(
            f"{args.execution_id} is waiting for {expected}, not {args.event_type!r}; nothing was"
            " delivered (--force sends it anyway: it waits in the inbox until a step waits for it)"
        )
    return waiting


def _json_option(text: str | None, flag: str) -> Any:
    """The JSON value of a command-line option, or None when it was not given."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{flag} is not JSON: {exc}", EXIT_USAGE) from None


async def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    payload = _json_option(args.payload, "--payload")
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
        print(
            printable(f"duplicate event id: {args.execution_id} already has it (status {status})"), file=out
        )
        return EXIT_OK
    note = "" if args.event_type in waiting else " (it was not waiting for it: the event waits in its inbox)"
    print(
        printable(f"delivered {args.event_type!r} to {args.execution_id}; it is now {status}{note}"), file=out
    )
    return EXIT_OK


async def cmd_restart(args: argparse.Namespace, out: TextIO) -> int:
    new_input = _json_option(args.input, "--input")
    owner = current_owner(args.db)
    if owner is not None:
        who = f"the server at {owner.address}" if owner.address else f"process {owner.pid or '(unknown)'}"
        raise CliError(f"{args.db!r} is in use by {who}: stop it to restart an execution from the CLI")

    async def action(client: Any) -> str:
        handle = await client.restart(
            args.execution_id,
            from_step=args.from_step,
            kind=args.kind,
            occurrence=args.occurrence,
            new_execution_id=args.new_id,
            input=new_input,
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
            printable(
                f"restarted {args.execution_id} from {args.kind} {args.from_step!r} as {new_id}; "
                f"it is now {status}"
            ),
            file=out,
        )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from ..history._server import serve, serve_runtime

    if args.app:
        try:
            return asyncio.run(serve_runtime(args.db, args.history or args.db, args.host, args.port, out))
        except DatabaseInUseError as exc:
            raise CliError(str(exc)) from None
    # Read-only, as list and show: the runtime file's journals, else its history tables.
    journals = _journals(args)
    if journals is not None:
        journals.close()
    else:
        _history_db(args).close()
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
