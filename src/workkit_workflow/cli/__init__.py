"""``workkit-workflow``: inspect and operate the local runtime from a shell.

Works on a local runtime SQLite file (``--db``, default ``./workflows.db``).
``list``, ``show`` and ``journal`` read the executions from the file's
journals themselves, so every execution is there whether or not the app
projected history; ``--history FILE`` reads a history database (the D1
projection's tables) instead. Every read command takes ``--json``.
Commands that drive executions (cancel, pause, unpause, delete, resume, restart,
move) need the workflow definitions: ``--app mymodule[:attr]`` imports them; so
does ``check-replay``, which replays stored journals against them without running
a handler.

One runtime file has one owner. Reading (list, show, serve without ``--app``)
works whatever holds the file. ``cancel``, ``pause``, ``unpause``, ``delete``
and ``resume`` open the file
themselves when it is free, and go through its owner when a ``serve --app``
holds it (its address is in ``<db>.lock``); any other owner is an error.
Once a command has taken effect it succeeds: ``--timeout`` only bounds how long
the CLI lets the execution run on before closing the file (it carries on from
its stored alarm when the file is next opened).

Exit codes: 0 success, 1 failure (not found, refused, runtime error), 2 usage.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import TextIO

from ..engine._ports import StorageReadError
from ..errors import WorkflowError
from ..local._lock import DatabaseInUseError
from ._commands import (
    STATUSES,
    _import_app,
    cmd_demo,
    cmd_journal,
    cmd_list,
    cmd_restart,
    cmd_resume,
    cmd_serve,
    cmd_show,
)
from ._control import cmd_cancel, cmd_control
from ._errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from ._parser import build_parser
from ._render import format_journal, format_list, format_timeline, printable

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "STATUSES",
    "CliError",
    "build_parser",
    "cmd_cancel",
    "cmd_control",
    "cmd_demo",
    "cmd_journal",
    "cmd_list",
    "cmd_restart",
    "cmd_resume",
    "cmd_serve",
    "cmd_show",
    "format_journal",
    "format_list",
    "format_timeline",
    "main",
]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with_replace = getattr(out, "reconfigure", None)
    if with_replace is not None and (out.encoding or "").lower() not in ("utf-8", "utf8"):
        with_replace(errors="replace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.run in (cmd_cancel, cmd_control, cmd_resume, cmd_restart):
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
        _error(str(exc))
        return exc.code
    except WorkflowError as exc:
        _error(exc.message)
        return EXIT_FAILED
    except DatabaseInUseError as exc:  # e.g. the demo's file, held by a serve
        _error(str(exc))
        return EXIT_FAILED
    except (OSError, sqlite3.Error, StorageReadError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    # A message may quote what a sender or step wrote: one line, its controls escaped.
    print(f"workkit-workflow: error: {printable(message)}", file=sys.stderr)
