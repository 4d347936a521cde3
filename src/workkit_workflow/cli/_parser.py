"""The CLI's argument parser: one builder per command (or group of alike commands)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._commands import (
    STATUSES,
    cmd_demo,
    cmd_journal,
    cmd_list,
    cmd_restart,
    cmd_resume,
    cmd_serve,
    cmd_show,
)
from ._control import cmd_cancel, cmd_control
from ._versions import add_version_commands

# ``add_subparsers`` returns a private argparse type; the builders only call ``add_parser`` on it.
Commands = Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workkit-workflow",
        description="Inspect and operate durable workflow executions of the local runtime.",
        epilog="exit codes: 0 success, 1 failure (not found, refused), 2 usage error",
    )
    common = _common_parent()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_reading(sub, common)
    driving = _driving_parent()
    _add_cancel(sub, common, driving)
    _add_control(sub, common, driving)
    _add_resume(sub, common, driving)
    _add_restart(sub, common, driving)
    _add_serve(sub, common)
    add_version_commands(sub, common, driving)  # versions: check-replay, export, move
    p = sub.add_parser("demo", help="run the demo")
    p.set_defaults(run=cmd_demo)
    return parser


def _common_parent() -> argparse.ArgumentParser:
    """The options every command on the runtime file takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", default="workflows.db", help="local runtime SQLite file (default: %(default)s)"
    )
    common.add_argument("--history", help="history database (default: the --db file)")
    return common


def _driving_parent() -> argparse.ArgumentParser:
    """The options of the commands that drive executions, so need the workflow definitions."""
    driving = argparse.ArgumentParser(add_help=False)
    driving.add_argument(
        "--app",
        required=True,
        help="module[:attr] defining your workflows (imported so the runtime can drive them)",
    )
    driving.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to let the execution run on before the command returns; it carries on"
        " later if it needs more (default: %(default)s)",
    )
    return driving


def _seconds(text: str) -> float:
    """A ``--timeout``: a finite number of seconds, 0 or more (checked before anything is sent)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {text!r}")
    return seconds


def _add_reading(sub: Commands, common: argparse.ArgumentParser) -> None:
    """``list``, ``show`` and ``journal``: the read commands."""
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


def _add_cancel(sub: Commands, common: argparse.ArgumentParser, driving: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cancel", parents=[common, driving], help="cancel an execution (compensation runs)")
    p.add_argument("execution_id")
    p.add_argument("--reason", help="recorded with the cancellation")
    p.add_argument(
        "--no-compensate",
        dest="compensate",
        action="store_false",
        help="terminate: the compensation handler does not run (nor the running children's)",
    )
    p.set_defaults(run=cmd_cancel)


def _add_control(sub: Commands, common: argparse.ArgumentParser, driving: argparse.ArgumentParser) -> None:
    helps = {
        "pause": "pause an execution: no new step starts until `unpause`",
        "unpause": "continue a paused execution (`resume` sends an event)",
        "delete": "delete a finished execution's storage now (its history stays)",
    }
    for verb, text in helps.items():
        p = sub.add_parser(verb, parents=[common, driving], help=text)
        p.add_argument("execution_id")
        p.set_defaults(run=cmd_control, verb=verb)


def _add_resume(sub: Commands, common: argparse.ArgumentParser, driving: argparse.ArgumentParser) -> None:
    p = sub.add_parser("resume", parents=[common, driving], help="send an event to a waiting execution")
    p.add_argument("execution_id")
    p.add_argument("event_type")
    p.add_argument("--payload", help="event payload as JSON")
    p.add_argument("--event-id", help="idempotency id: a second delivery with it is ignored")
    p.add_argument(
        "--force", action="store_true", help="send it even if the execution waits for another event type"
    )
    p.set_defaults(run=cmd_resume)


def _add_restart(sub: Commands, common: argparse.ArgumentParser, driving: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "restart",
        parents=[common, driving],
        help="start a new execution reusing an old one's journal up to a step (after a fix)",
    )
    p.add_argument("execution_id")
    p.add_argument("--from-step", required=True, help="the first step to run again")
    p.add_argument(
        "--kind", choices=("step", "sleep", "wait"), default="step", help="the kind of that operation"
    )
    p.add_argument(
        "--occurrence", type=int, default=1, help="which one of that kind and name, from 1 (default: 1)"
    )
    p.add_argument("--new-id", help="the new execution's id (default: a new UUID)")
    p.add_argument("--input", help="new input as JSON (default: the old execution's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_restart)


def _add_serve(sub: Commands, common: argparse.ArgumentParser) -> None:
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
    p.add_argument("--port", type=_port, default=8787, help="0-65535 (default: %(default)s)")
    p.set_defaults(run=cmd_serve)


def _port(text: str) -> int:
    """A TCP port (0: any free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text!r}")
    return port
