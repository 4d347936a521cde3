"""The operations the wire exposes on one execution: execute, status, journal,
meta, result, cancel, event. Cancel and event are *signals* to the runner, sent
by the protocol stated in ``_runner``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..definitions._steps import check_name
from ..definitions._values import validate
from ..definitions._versions import version_of
from ..definitions._workflow import Registry
from ..errors import ExecutionConflictError, InvalidRequestError
from . import _journal as jn
from ._children import check_same_parent, children_of, refuse_forged_outcome
from ._creation import begun_by, new_meta, new_state, restored_records
from ._limits import limit_meta
from ._runner import Runner
from ._signals import StorageFailure
from ._state import ExecutionState
from ._undo import hide_undo_key


@dataclass(eq=False)
class Requests:
    """Answers the wire's requests about one execution (the base of ``ExecutionCore``)."""

    execution: ExecutionState
    registry: Registry
    runner: Runner
    lease: float
    _create_lock: asyncio.Lock | None = field(default=None, init=False)
    """Held while a request checks for (and makes) the execution; dropped once it exists."""
    _event_lock: asyncio.Lock | None = field(default=None, init=False)
    """Made by the first event: an execution that gets none keeps no lock."""

    async def execute(
        self,
        *,
        workflow: str,
        input: Any,
        execution_id: str | None,
        wait: bool,
        restart: Mapping[str, Any] | None = None,
        parent: Mapping[str, Any] | None = None,
        version: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create the execution if it does not exist, then drive it (or let the alarm).

        Returns ``(status view, created)``. A second call for the same id, at
        the same time or later, never starts a second run.
        """
        created, ended = await self.start(
            workflow=workflow,
            input=input,
            execution_id=execution_id,
            wait=wait,
            restart=restart,
            parent=parent,
            version=version,
        )
        if ended is not None:
            await ended
        return await self.view(), created

    async def start(
        self,
        *,
        workflow: str,
        input: Any,
        execution_id: str | None,
        wait: bool,
        restart: Mapping[str, Any] | None = None,
        parent: Mapping[str, Any] | None = None,
        version: str | None = None,
    ) -> tuple[bool, Awaitable[None] | None]:
        """:meth:`execute` up to the wait: ``(created, the run)`` with ``wait`` (the
        runner's :meth:`~Runner.drive_here`, which the caller must await at once);
        without ``wait`` the alarm set at creation (due now) starts the execution, and
        the run is None.

        The caller awaits the run in its own frame: a request driving an execution
        then holds no frame of this module while the execution runs."""
        execution = self.execution
        await execution.ensure_loaded()
        lock = self._create_lock
        if lock is None:
            lock = self._create_lock = asyncio.Lock()
        async with lock:
            if execution.meta is not None:
                if execution.meta.get("workflow") != workflow:
                    raise ExecutionConflictError(
                        f"execution {execution.meta.get('execution_id')!r} already runs workflow "
                        f"{execution.meta.get('workflow')!r}, not {workflow!r}",
                        execution_id=execution.meta.get("execution_id"),
                    )
                check_same_parent(execution.meta, parent)
                created = False
            else:
                await self._create(
                    workflow, version, input, execution_id, restart, driven_here=wait, parent=parent
                )
                created = True
        if execution.meta is not None:
            # It exists: no request makes it again, and every request checks ``meta``
            # under a lock made after this (an object keeps no lock for good).
            self._create_lock = None
        return created, self.runner.drive_here() if wait else None

    async def _create(
        self,
        workflow: str,
        version: str | None,
        input: Any,
        execution_id: str | None,
        restart: Mapping[str, Any] | None,
        *,
        driven_here: bool,
        parent: Mapping[str, Any] | None = None,
    ) -> None:
        # versions: a new execution runs the version asked for, else the newest.
        definition = self.registry.get(workflow, version)
        if definition.input_type is not None:
            validate(definition.input_type, input, what="workflow input")
        now = self.execution.now()
        meta = new_meta(definition, workflow, input, execution_id or str(uuid.uuid4()), now)
        puts: dict[str, str] = {}
        limit = limit_meta(self.execution, definition, input)  # concurrency limits: wait queued for a slot
        if limit is not None:
            meta["concurrency"] = limit
        if parent:
            meta["parent"] = dict(parent)
        if restart:
            meta["restarted_from"] = {
                "execution_id": restart.get("execution_id"),
                "from_step": restart.get("from_step"),
                "kind": restart.get("kind", "step"),
                "occurrence": restart.get("occurrence", 1),
            }
            puts = restored_records(restart)
        meta_text = jn.encode_record(jn.META, meta, what="workflow input")
        state = new_state(now)
        begins = driven_here and limit is None
        if limit is not None:
            state["status"] = "queued"
        elif begins:
            # The drive this request starts at once begins in this write: one write less.
            state.update(status="running", started_at=now, incarnation=1, driving=True)
        state_text = jn.encode_record(jn.STATE, state, what="execution state")
        # The alarm starts it whoever drives it: due now, or a lease if this request drives it.
        alarm = now + self.lease if driven_here else now
        # Cached before the write is issued, as ``write_state`` does: a drive run while it is
        # awaited (its alarm due now) builds on them, and nothing here undoes what it wrote.
        execution = self.execution
        execution.meta, execution.state = meta, state
        records = {**puts, jn.META: meta_text, jn.STATE: state_text}
        try:
            written = execution.write(records, alarm=alarm)
            execution.begun = begun_by(execution, records) if begins else None
            await written
        except StorageFailure:
            if execution.state is state:
                execution.meta = execution.state = execution.begun = None  # nothing was written
            raise

    async def view(self) -> dict[str, Any]:
        """What ``/status`` answers (and every request that changes the execution)."""
        # Not loaded: a run this request drove failed and forgot what it read (storage is the
        # truth, ``Driver._after_failure``); read again, never "no execution" for one that is.
        await self.execution.ensure_loaded()
        meta, state = self.execution.require()
        run = self.execution.run if self.runner.active else None
        view = _view(meta, state, sorted(run.current.values()) if run is not None else [])
        if state.get("child_count"):  # else the state lists them itself, or there are none
            view["children"] = await children_of(self.execution)
        return view

    async def journal(self, undo_keys: bool = False) -> list[dict[str, Any]]:
        await self.execution.ensure_loaded()
        self.execution.require()
        entries = []
        for prefix, phase in ((jn.MAIN, "main"), (jn.COMPENSATION, "compensation")):
            for key, text in (await self.execution.storage.list(prefix=prefix)).items():
                entry = jn.decode_record(key, text)
                entry.pop("idempotency_key", None)
                if not undo_keys:  # kept for a restart, which carries them over (client._restart)
                    hide_undo_key(entry)
                entry["phase"] = phase
                entries.append(entry)
        return entries

    async def meta(self) -> dict[str, Any]:
        await self.execution.ensure_loaded()
        meta, state = self.execution.require()
        journal = await self.journal()
        attempts = sum(int(e.get("attempt", 0)) for e in journal if e.get("kind") == "step")
        return {
            **{k: v for k, v in meta.items() if k != "v"},
            "version": version_of(meta),
            "status": state["status"],
            "started_at": state.get("started_at"),
            "finished_at": state.get("finished_at"),
            "attempts": attempts,
            "steps": sum(1 for e in journal if e["phase"] == "main"),
            "incarnations": state.get("incarnation", 0),
            "recoveries": (state.get("recoveries") or {}).get("count", 0),
        }

    async def result(self, wait: float = 0.0) -> dict[str, Any]:
        """The outcome once settled; waits up to ``wait`` seconds (in memory) for it."""
        execution = self.execution
        await execution.ensure_loaded()
        execution.require()
        if wait > 0 and not execution.is_settled():
            settled = execution.settled_event()
            waiter = execution.spawn(settled.wait())
            timer = execution.spawn(execution.clock.sleep(wait))
            try:
                await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                timer.cancel()
        view = await self.view()
        if not view["settled"]:
            return {"settled": False, **view}
        if view["status"] == "completed":
            raw = await execution.storage.get(jn.RESULT)
            value = jn.decode_record(jn.RESULT, raw)["value"] if raw is not None else None
            return {**view, "ok": True, "value": value}
        return {**view, "ok": False, "journal": await self.journal()}

    async def cancel(self, reason: str | None = None, compensate: bool = True) -> tuple[dict[str, Any], bool]:
        """Request cancellation. Returns ``(view, changed)``; a finished execution is left alone.

        ``compensate=False`` terminates: the main phase stops, and neither its compensation
        nor its running children's runs (error code ``terminated``). A cancel ends a pause.
        """
        execution = self.execution
        await execution.ensure_loaded()
        _, state = execution.require()
        if state["phase"] != "main" or state["status"] in jn.TERMINAL:
            return await self.view(), False
        await execution.write_state(
            {
                "status": "cancelled",
                "cancel_requested_at": execution.now(),
                "cancel_reason": reason,
                "cancel_compensate": compensate,  # control
                "paused": None,
            },
            alarm=self.runner.signal(execution.now()),
        )
        run = execution.run
        if run is not None and run.prefix == jn.MAIN:
            run.stop()
        self.runner.wake()
        return await self.view(), True

    async def send_event(self, event_type: str, payload: Any, event_id: str | None) -> dict[str, Any]:
        """Deliver an external event to the inbox; duplicates (same id) are ignored."""
        check_name(event_type, "event type")
        refuse_forged_outcome(event_type, event_id)
        execution = self.execution
        await execution.ensure_loaded()
        execution.require()
        event_id = event_id or str(uuid.uuid4())
        marker = jn.EVENT_ID + event_id
        if len(marker) > 512:
            raise InvalidRequestError("event id is longer than 500 characters")
        if self._event_lock is None:
            self._event_lock = asyncio.Lock()
        async with self._event_lock:
            # A repeat of a delivered event is a duplicate even once the execution
            # has finished: senders retry (the mail outbox), and must not see a conflict.
            if await execution.storage.get(marker) is not None:
                return {"accepted": False, "duplicate": True, "event_id": event_id}
            # Finished during that read, or forgotten by a failed run? Decide with the write.
            await execution.ensure_loaded()
            state = self._check_accepts_events(event_type)
            await self._store_event(event_type, payload, event_id, marker, state)
        if execution.run is not None:
            execution.run.deliver(event_type)
        self.runner.wake()
        return {"accepted": True, "duplicate": False, "event_id": event_id}

    async def _store_event(
        self, event_type: str, payload: Any, event_id: str, marker: str, state: Mapping[str, Any]
    ) -> None:
        execution = self.execution
        seq = int(state.get("events_received", 0)) + 1
        key = jn.seq_key(jn.INBOX, seq)
        record = {"id": event_id, "type": event_type, "payload": payload, "received_at": execution.now()}
        text = jn.encode_record(key, record, what=f"payload of event {event_type!r}")
        # In the inbox before the write is issued, so a runner replaying meanwhile
        # finds it; taken back out if the write fails.
        execution.inbox[key] = record
        try:
            await execution.write_state(
                {"events_received": seq},
                puts={key: text, marker: jn.dumps({"v": jn.VERSION, "key": key})},
                alarm=self.runner.signal(execution.now()),
            )
        except StorageFailure:
            execution.inbox.pop(key, None)
            raise

    def _check_accepts_events(self, event_type: str) -> dict[str, Any]:
        _, state = self.execution.require()
        if state["status"] in jn.TERMINAL or state["phase"] != "main":
            raise ExecutionConflictError(
                f"the execution is {state['status']}; the {event_type!r} event was not delivered",
                status=state["status"],
            )
        return state


def _view(meta: Mapping[str, Any], state: Mapping[str, Any], running: list[str]) -> dict[str, Any]:
    """The execution's status as ``meta`` and ``state`` hold it (its children as a state
    written before they had records of their own lists them: ``Requests.view`` reads them)."""
    return {
        "execution_id": meta["execution_id"],
        "workflow": meta["workflow"],
        "version": version_of(meta),
        "status": state["status"],
        "settled": state["phase"] == "done",
        "created_at": state["created_at"],
        "updated_at": state["updated_at"],
        "started_at": state.get("started_at"),
        "finished_at": state.get("finished_at"),
        "wake_at": state.get("wake_at"),
        "waiting_for": state.get("waiting_for") or [],
        "waiting_for_count": state.get("waiting_for_count") or len(state.get("waiting_for") or []),
        "error": state.get("error"),
        "failed_step": state.get("failed_step"),
        "step_attempt": state.get("step_attempt", 0),
        "compensation": state.get("compensation"),
        "cancel_reason": state.get("cancel_reason"),
        "blocked": state.get("blocked"),
        "paused_at": (state.get("paused") or {}).get("at"),
        "paused_reason": (state.get("paused") or {}).get("reason"),
        "delete_at": state.get("delete_at"),
        "running": running,
        "parent": meta.get("parent"),
        "queue": state.get("queue") if state["status"] == "queued" else None,
        "children": state.get("children") or [],
    }
