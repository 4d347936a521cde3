"""Driving executions from the CLI: in a local runtime opened on the file, or through
the process that owns it (``serve --app``)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from ..history import LocalD1
from ..local._lock import DatabaseInUseError, Owner
from ._errors import CliError


async def _with_runtime(args: argparse.Namespace, action: Any, after: Any = None) -> Any:
    from ..client._client import create_durable_workflow
    from ..local import LocalNamespace

    history = LocalD1(args.history or args.db)
    try:
        ns = LocalNamespace(args.db, env={"HISTORY_DB": history})
    except DatabaseInUseError as exc:
        history.close()
        raise CliError(str(exc)) from None
    try:
        client = create_durable_workflow(ns, history=history)
        result = await action(client)
        # Let the object finish what the request started (compensation, the next
        # steps, history delivery) before the process ends. Running out of time is
        # no failure: what the object acknowledged is committed, and so is the alarm
        # (its lease, or one due now) that carries it on when the file is next opened.
        try:
            await ns.idle(timeout=args.timeout)
        except TimeoutError:
            _note_still_busy(args, await _busy(ns, args))
        return result if after is None else (result, await after(client))
    finally:
        await ns.close()
        history.close()


async def _busy(ns: Any, args: argparse.Namespace) -> bool:
    """Whether the command's own execution is among the objects still running."""
    try:
        await ns.idle(timeout=0.0, name=args.execution_id)
    except TimeoutError:
        return True
    return False


def _note_still_busy(args: argparse.Namespace, itself: bool) -> None:
    who = args.execution_id if itself else f"another execution in {args.db!r}"
    print(
        f"workkit-workflow: note: {who} was still running when --timeout ({args.timeout:g} s) ran"
        f" out; it carries on from its stored alarm the next time {args.db!r} is opened (by your"
        " app, `serve --app` or another command)",
        file=sys.stderr,
    )


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
