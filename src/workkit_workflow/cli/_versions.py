"""``check-replay``, ``export`` and ``move``: workflow versions from a shell.

``check-replay --app MODULE`` replays stored journals against the code the
module registers, running no step handler, and exits 1 if any would not
replay. The journals come from a local runtime file (``--db``, read-only
without its owner lock, as ``list`` and ``show`` read it: by default its
unfinished executions, with ``--all`` every one) and from files (``--journal``,
repeatable): exports of deployed executions (``ExecutionHandle.export()``, or
``export`` here) or storage snapshots such as ``tests/golden/*.json``.

``move ID --to-version V --app MODULE`` moves an unfinished execution of a local
runtime file to another version (``ExecutionHandle.move_to_version``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO

from ..definitions._workflow import REGISTRY
from ..engine._export import StoredJournal, make_export, read_export
from ..engine._replay_check import ReplayReport, check_stored
from ..errors import WorkflowError
from ..history._journals import JournalFile
from ..local._lock import current_owner
from ._commands import _import_app
from ._drive import _with_runtime
from ._errors import EXIT_FAILED, EXIT_OK, CliError
from ._render import printable

Commands = Any


def add_version_commands(
    sub: Commands, common: argparse.ArgumentParser, driving: argparse.ArgumentParser
) -> None:
    """The parsers of ``check-replay``, ``export`` and ``move``."""
    p = sub.add_parser(
        "check-replay",
        help="replay stored journals against the current code (no handler runs); exit 1 on a mismatch",
    )
    p.add_argument("--app", required=True, help="module[:attr] defining your workflows (the new code)")
    p.add_argument("--db", help="local runtime SQLite file (default: workflows.db unless --journal is given)")
    p.add_argument(
        "--journal", action="append", default=[], metavar="FILE", help="an exported journal (repeatable)"
    )
    p.add_argument("--all", action="store_true", help="also the finished executions of --db")
    p.add_argument("--version", dest="against", help="check against this version, not each execution's own")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_check_replay)

    p = sub.add_parser("export", parents=[common], help="write one execution's journal to a file")
    p.add_argument("execution_id")
    p.add_argument("--out", help="the file to write (default: standard output)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser(
        "move",
        parents=[common, driving],
        help="run an unfinished execution on another version of its workflow (its journal is replayed)",
    )
    p.add_argument("execution_id")
    p.add_argument("--to-version", required=True, help="a version the --app module registers")
    p.set_defaults(run=cmd_move)


def _from_file(path: str) -> StoredJournal:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read --journal {path!r}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"--journal {path!r} is not JSON: {exc}") from None
    try:
        return read_export(document, source=path)
    except WorkflowError as exc:
        raise CliError(exc.message) from None


def _open(path: str) -> JournalFile:
    try:
        journals = JournalFile.open(path)
    except FileNotFoundError:
        raise CliError(f"no runtime database at {path!r} (use --db PATH)") from None
    if not journals.has_journals():
        journals.close()
        raise CliError(f"{path!r} is not a workkit-workflow runtime file (no journals)")
    return journals


def _from_db(path: str, *, finished: bool) -> list[StoredJournal]:
    journals = _open(path)
    try:
        found = []
        for stored in journals.stored():
            if stored.state.get("phase") == "done" and not finished:
                continue
            execution_id = str(stored.meta["execution_id"])
            document = make_export(stored.meta, stored.state, journals.journal(execution_id))
            found.append(read_export(document, source=f"{path}: {execution_id}"))
        return sorted(found, key=lambda j: j.execution_id)
    finally:
        journals.close()


def _line(report: ReplayReport) -> str:
    return printable(f"{report.execution_id}  {report.workflow}@{report.version}  {report.describe()}")


async def cmd_check_replay(args: argparse.Namespace, out: TextIO) -> int:
    _import_app(args.app)
    journals = [_from_file(path) for path in args.journal]
    db = args.db or (None if args.journal else "workflows.db")
    if db is not None:
        journals.extend(_from_db(db, finished=args.all))
    reports = [await check_stored(REGISTRY, journal, version=args.against) for journal in journals]
    failed = [r for r in reports if not r.ok]
    if args.json:
        print(json.dumps({"ok": not failed, "executions": [r.to_dict() for r in reports]}), file=out)
    else:
        for report in reports:
            print(_line(report), file=out)
        if not reports:
            print("no executions to check", file=out)
        else:
            print(
                f"{len(reports)} checked: {len(reports) - len(failed)} replay, {len(failed)} do not", file=out
            )
    return EXIT_FAILED if failed else EXIT_OK


async def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    journals = _open(args.db)
    try:
        stored = journals.execution(args.execution_id)
        document = make_export(stored.meta, stored.state, journals.journal(args.execution_id))
    finally:
        journals.close()
    text = json.dumps(document, indent=1, ensure_ascii=False)
    if args.out is None:
        print(text, file=out)
        return EXIT_OK
    target = Path(args.out)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    os.replace(temporary, target)
    print(f"exported {args.execution_id} ({len(document['entries'])} entries) to {args.out}", file=out)
    return EXIT_OK


def cmd_move(args: argparse.Namespace, out: TextIO) -> int:
    if not os.path.exists(args.db):
        raise CliError(f"no runtime database at {args.db!r} (use --db PATH)")
    owner = current_owner(args.db)
    if owner is not None:
        who = f"the server at {owner.address}" if owner.address else f"process {owner.pid or '(unknown)'}"
        raise CliError(f"{args.db!r} is in use by {who}: stop it to move an execution from the CLI")
    _import_app(args.app)
    return asyncio.run(_move(args, out))


async def _move(args: argparse.Namespace, out: TextIO) -> int:
    async def action(client: Any) -> bool:
        return bool(await client.execution(args.execution_id).move_to_version(args.to_version))

    async def status(client: Any) -> str:
        return str(await client.execution(args.execution_id).status())

    moved, now = await _with_runtime(args, action, status)
    what = "moved" if moved else "already on"
    print(printable(f"{what} {args.execution_id} to version {args.to_version!r}; it is now {now}"), file=out)
    return EXIT_OK
