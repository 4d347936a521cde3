"""``cancel`` (``--no-compensate``), ``pause``, ``unpause`` and ``delete``: the operator controls."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from ..local._lock import current_owner
from ._drive import _through_owner, _with_runtime
from ._errors import EXIT_FAILED, EXIT_OK
from ._render import printable

_CONTROL_ANSWERS = {
    "pause": ("paused", "paused {id}; it is now {status}", "{id} was already paused"),
    "unpause": ("unpaused", "continued {id}; it is now {status}", "{id} was not paused (it is {status})"),
    "delete": ("deleted", "deleted {id}", "{id} was already deleted"),
}


async def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    """``pause``, ``unpause``, ``delete`` (``args.verb``)."""
    key, done, unchanged = _CONTROL_ANSWERS[args.verb]

    async def action(client: Any) -> bool:
        handle = client.execution(args.execution_id)
        if args.verb == "delete":
            await handle.delete()
            return True
        return bool(await getattr(handle, args.verb)())

    async def current_status(client: Any) -> str | None:
        # Read once the object has acted on the command (the runtime is idle).
        return None if args.verb == "delete" else str(await client.execution(args.execution_id).status())

    owner = current_owner(args.db)
    if owner is not None:
        answer = _through_owner(args, owner, args.verb, {})
        changed, status = bool(answer[key]), answer.get("status")
    else:
        changed, status = await _with_runtime(args, action, current_status)
    print(printable((done if changed else unchanged).format(id=args.execution_id, status=status)), file=out)
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    async def action(client: Any) -> bool:
        handle = client.execution(args.execution_id)
        return bool(await handle.cancel(args.reason, compensate=args.compensate))

    owner = current_owner(args.db)
    if owner is not None:
        body = {"reason": args.reason, "compensate": args.compensate}
        changed = bool(_through_owner(args, owner, "cancel", body)["cancelled"])
    else:
        changed = await _with_runtime(args, action)
    print(
        f"cancelled {args.execution_id}" if changed else f"{args.execution_id} had already finished", file=out
    )
    return EXIT_OK if changed else EXIT_FAILED
