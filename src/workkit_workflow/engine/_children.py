"""The mail between a parent execution and its children (see ``phase._child``).

Three messages, each written in the commit of the change that causes it:

* the parent's ``child`` operation starts the child: ``POST /execute`` to the
  child's object, with ``parent`` naming the parent and the operation; a
  definitive refusal comes back to the parent as the child's outcome event;
* the child settles (completed, failed, cancelled; after its compensation):
  its outcome goes to the parent as the event ``child:<child id>``, with the
  child's result or error (``outcome_mail``, a settle hook of the state);
* the parent's main phase ends while children still run (it was cancelled, it
  failed, it timed out): each gets ``POST /cancel``, and its compensation runs;
  a parent terminated (cancelled with ``compensate=False``) sends
  ``"compensate": false``, so the whole tree stops without compensating (a child
  already cancelled keeps the compensation it was given).

Every message has an id the receiver deduplicates on: the child's id for the
start (``/execute`` is idempotent by id), the event id for the outcome.

The parent lists its children (id, workflow, operation, status) in records of their
own, ``children:<op>``, written in the commits that start and finish each child: the
``state`` record only counts them (``child_count``), so a parent's writes stay the same
size however many children it starts. (A state written before kept the list itself,
``children``: it is still read, and kept up to date, for the children it names.)

A start also writes ``child-id:<child id>``, the operation that holds the id, and the
state counts the children so recorded (``child_id_records``): while that count is
``child_count``, a start asks storage for its child's id alone (``ChildOwners``), so a
parent that starts its children one after the other reads one record per start, not the
rows of every child before it. A parent with children started before these records (or
by a release that does not write them: the counts then differ, and stay apart) reads
every row instead, once per run, as it did.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from ..definitions._steps import CHILD_EVENT_PREFIX, reserved_event_type
from ..errors import ExecutionConflictError, InvalidRequestError, SerializationError
from . import _journal as jn
from ._mail import Mail
from ._ports import StorageReadError
from ._signals import StorageFailure
from ._state import ExecutionState

T = TypeVar("T")

EVENT_PREFIX = CHILD_EVENT_PREFIX
"""Event types starting with this are reserved: a child's outcome for its parent."""


def child_row(entry: Mapping[str, Any], status: str) -> dict[str, Any]:
    """How the parent lists the child of ``entry`` (a ``child`` operation)."""
    return {
        "execution_id": entry["child_id"],
        "workflow": entry["workflow"],
        "op": entry["op"],
        "status": status,
    }


def child_record(row: Mapping[str, Any]) -> tuple[str, str]:
    """The key and text of the record holding ``row`` (``child_row``)."""
    key = jn.op_key(jn.CHILDREN, int(row["op"]))
    return key, jn.encode_record(key, {"v": jn.VERSION, **row}, what="child row")


async def children_of(execution: ExecutionState) -> list[dict[str, Any]]:
    """The execution's children, in the order of their operations (read only when it
    started some)."""
    state = execution.state or {}
    rows = {int(row["op"]): row for row in state.get("children") or []}  # a state written before
    if state.get("child_count"):
        for key, text in (await execution.storage.list(prefix=jn.CHILDREN)).items():
            row = jn.decode_record(key, text)
            row.pop("v", None)
            rows[int(row["op"])] = row
    # In operation order: the state's list is, storage lists keys in order, and a child with
    # a record of its own started after every child the state lists.
    return list(rows.values())


def id_record(child: str, op: int) -> tuple[str, str]:
    """The key and text of the record saying that operation ``op`` holds ``child``."""
    key = jn.CHILD_IDS + child
    return key, jn.encode_record(key, {"v": jn.VERSION, "op": op}, what="child id")


def ids_recorded(state: Mapping[str, Any]) -> bool:
    """Whether every child the execution started has its id's record (see the module)."""
    if state.get("children"):  # a state that lists its children itself: written before
        return False
    return int(state.get("child_id_records") or 0) == int(state.get("child_count") or 0)


def one_more_child(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The state's change for a child's row written, with its id's record when the child
    starts (one listed ``not_started`` holds no id, and needs none): the state counts both."""
    state = state or {}
    count = int(state.get("child_count") or 0)
    changes: dict[str, Any] = {"child_count": count + 1}
    if ids_recorded(state):
        changes["child_id_records"] = count + 1
    return changes


class ChildOwners:
    """Which operation of one phase run's execution holds each child id: learnt from
    storage as each start of the run asks (``find``), then kept by the start, checked and
    taken with no await between the two, so two operations gathered that name one child
    cannot both start it. A child listed ``not_started`` holds nothing."""

    def __init__(self) -> None:
        self.owners: dict[str, int] = {}
        self._earlier: bool | None = None
        """Whether the execution had children when the run's first start asked."""
        self._read: asyncio.Future[None] | None = None

    async def find(self, execution: ExecutionState, child: str) -> None:
        """Learn whether an earlier run started ``child``: its id's record (one read), or
        every row, once, for an execution whose children are not all recorded by id."""
        state = execution.state or {}
        if self._earlier is None:  # before the run writes a child of its own
            self._earlier = bool(state.get("child_count") or state.get("children"))
        if not self._earlier or child in self.owners:
            return
        if not ids_recorded(state):
            await self._read_rows(execution)
            return
        key = jn.CHILD_IDS + child
        text = await _read(execution.storage.get(key))
        if text is not None:
            self.owners.setdefault(child, int(jn.decode_record(key, text)["op"]))

    async def _read_rows(self, execution: ExecutionState) -> None:
        reading = self._read
        if reading is None:
            reading = self._read = asyncio.get_running_loop().create_future()
            try:
                rows = await _read(children_of(execution))
            except BaseException as exc:
                reading.set_exception(exc)
                reading.exception()  # retrieved: whoever waits on it re-raises
                raise
            for row in rows:
                if row.get("status") != "not_started":
                    self.owners.setdefault(str(row["execution_id"]), int(row["op"]))
            reading.set_result(None)
        elif not reading.done():
            await asyncio.shield(reading)


async def _read(reading: Awaitable[T]) -> T:
    try:
        return await reading
    except StorageReadError as exc:  # inside the body: the engine's signal, as a journal page's
        raise StorageFailure(exc.cause, "read") from exc


def not_its_child(child: str | None, parent_id: Any, op: Any) -> ExecutionConflictError:
    """The refusal of a start of ``child`` for operation ``op`` of ``parent_id``, when the
    child is another execution, or another operation's child."""
    return ExecutionConflictError(
        f"execution {child!r} already exists and is not the child of {parent_id!r} at "
        f"operation #{op}: give the child another id",
        execution_id=child,
    )


def event_id(child: str, what: str) -> str:
    """The id of an event about ``child``: ``<child id>:<what>``, shortened with a hash
    past the 200 characters an event id may have."""
    full = f"{child}:{what}"
    if len(full) <= 200:
        return full
    return f"{child[:150]}:{hashlib.sha256(full.encode()).hexdigest()[:16]}:{what}"


def refuse_forged_outcome(event_type: str, sent_id: str | None) -> None:
    """Refuse an event of a reserved type (``child:<id>``) unless it is one a child's object
    or its refused start sends (its id is the one ``outcome_mail`` or ``start_message``
    gives it): any other could pose as a child's outcome and end the operation waiting for
    it with a forged result."""
    reserved = reserved_event_type(event_type)
    if reserved is None:
        return
    child = event_type[len(EVENT_PREFIX) :]
    if sent_id not in (event_id(child, "outcome"), event_id(child, "refused")):
        raise InvalidRequestError(reserved, field="type")


def _mail(execution: ExecutionState) -> Mail:
    mail = execution.mail
    if not isinstance(mail, Mail):
        raise RuntimeError("this execution has no mail outbox")
    return mail


def start_message(
    execution: ExecutionState, *, op: int, child: str, workflow: str, input: Any
) -> dict[str, str]:
    """The records that start ``child`` (put them with the parent's journal entry)."""
    parent = {"execution_id": execution.execution_id, "workflow": execution.workflow_name, "op": op}
    body = {"workflow": workflow, "input": input, "execution_id": child, "wait": False, "parent": parent}
    return _mail(execution).message(
        child,
        "POST",
        "/execute",
        body,
        id=f"{child}:start",
        on_rejected={"event": EVENT_PREFIX + child, "event_id": event_id(child, "refused")},
        what=f"the start message of child {child!r} (its input)",
    )


def outcome_mail(
    execution: ExecutionState, state: Mapping[str, Any], puts: Mapping[str, str]
) -> dict[str, str]:
    """The settle hook: a child that settles tells its parent how it ended."""
    parent = (execution.meta or {}).get("parent")
    if not isinstance(parent, dict) or not parent.get("execution_id"):
        return {}
    child = execution.execution_id
    outcome: dict[str, Any] = {"execution_id": child, "status": state.get("status")}
    if state.get("status") == "completed":
        raw = puts.get(jn.RESULT)
        outcome.update(ok=True, value=jn.decode_record(jn.RESULT, raw).get("value") if raw else None)
    else:
        outcome.update(ok=False, error=state.get("error"), failed_step=state.get("failed_step"))
    outcome_id = event_id(child, "outcome")
    body: dict[str, Any] = {"type": EVENT_PREFIX + child, "payload": outcome, "id": outcome_id}
    mail = _mail(execution)
    try:
        return mail.message(parent["execution_id"], "POST", "/event", body, id=outcome_id)
    except SerializationError as exc:
        # A result too large to travel with the message: the parent sees a failure
        # that says so (the child's own result stays readable on the child).
        body["payload"] = {"execution_id": child, "status": "failed", "ok": False, "error": exc.to_dict()}
        return mail.message(parent["execution_id"], "POST", "/event", body, id=outcome_id)


def cancel_children(
    execution: ExecutionState, entries: Mapping[int, Mapping[str, Any]], status: str
) -> dict[str, str]:
    """The records that cancel the children still running when the main phase ends
    (``status``: how it ended; ``terminated``, a cancel without compensation, cancels
    them without compensation too, and the message says so: it is sent from storage)."""
    body: dict[str, Any] = {"reason": f"parent {execution.execution_id} {status}"}
    if status == "terminated":
        body["compensate"] = False  # absent: the receiver's default, compensate
    puts: dict[str, str] = {}
    for _, entry in sorted(entries.items()):
        if entry.get("kind") == "child" and entry.get("status") == "waiting":
            child = str(entry["child_id"])
            puts.update(_mail(execution).message(child, "POST", "/cancel", body, id=f"{child}:cancel"))
    return puts


def check_same_parent(meta: Mapping[str, Any], parent: Mapping[str, Any] | None) -> None:
    """A start for an execution that exists: fine from its own parent (a repeated
    delivery), a conflict from another one, whose outcome would never arrive."""
    if parent is None:
        return
    mine = meta.get("parent") or {}
    if mine.get("execution_id") != parent.get("execution_id") or mine.get("op") != parent.get("op"):
        raise not_its_child(meta.get("execution_id"), parent.get("execution_id"), parent.get("op"))
