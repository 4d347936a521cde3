"""What the single runner does each time it drives: read the execution from
storage, start a new incarnation (with its lease), run the phase it is in, and
go round again if a signal arrived while it parked (see ``_runner``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from ..definitions._workflow import Registry, Workflow
from ..errors import WorkflowError
from . import _journal as jn
from . import _pages
from ._alarms import AlarmBackoff
from ._limits import needs_slot, wait_for_slot
from ._pages import JournalWindow, journal_end, read_execution
from ._pause import is_paused
from ._phases import Entries, Phases
from ._ports import StorageReadError
from ._recoveries import journal_mark, recovery_changes
from ._retention import Retention
from ._runner import Runner
from ._signals import StorageFailure
from ._state import ExecutionState, decode_state
from ._versions import resolve

log = logging.getLogger("workkit_workflow")


class Driver(AlarmBackoff):
    """The runner's body for one execution, and the backoff of its alarm after failures."""

    def __init__(
        self,
        execution: ExecutionState,
        registry: Registry,
        *,
        lease: float,
        retention: float | None = None,
    ) -> None:
        super().__init__()
        self.execution = execution
        self.registry = registry
        self.lease = lease
        self.runner = Runner(self)
        self.retention_default = retention
        self.incarnated = False
        """Whether this object instance has begun an incarnation of the execution. One begun
        while the stored one has not parked is a recovery (``_recoveries``) only in an instance
        that has not: in this one, it is a drive after a signal or a failure."""

    # Stateless pieces made when used, not kept: each object an execution keeps is walked by
    # the garbage collector for as long as it is in flight.

    @property
    def retention(self) -> Retention:
        """What happens to the settled execution's storage."""
        return Retention(self.execution, self.retention_default)

    @property
    def phases(self) -> Phases:
        """The phase runs and ends."""
        return Phases(self.execution, self.runner, self.retention)

    def failure(self, exc: BaseException) -> BaseException | None:
        """What waiters for a run that raised ``exc`` raise: what the runner does not
        handle itself (the object died under it), not its failures, which it deals
        with, nor its cancellation."""
        if isinstance(exc, (Exception, StorageFailure, asyncio.CancelledError)):
            return None
        return exc

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a run (``drive``) as a task of the object (the runner's ``Body``)."""
        return self.execution.spawn(coro)

    async def drive(self) -> None:
        """One run of the runner: drive until the execution is done or parked. Its last
        step tells the runner that it has ended (``Runner.finished``), with what it raises."""
        # While the main phase's body runs, the runner's task holds this frame and the run's
        # (``PhaseRun.execute``, awaited here): the reading and deciding before it is done
        # by ``_next_phase``, which has returned by then, and the phase's end after it.
        self.alarm_unset = False  # judged per run: the alarm handler asks about the run it awaited
        execution = self.execution
        died: BaseException | None = None
        try:
            try:
                while True:
                    ready = await self._next_phase()
                    if isinstance(ready, bool):
                        if ready:
                            continue
                        break
                    definition, main_entries, comp_entries = ready
                    del ready  # not held while the phase runs
                    if not execution.state or execution.state["phase"] != "main":
                        outcome = await self.phases.compensation(definition, main_entries, comp_entries)
                    elif (run := self.phases.main_run(definition, main_entries)) is None:
                        await self.phases.main_stopped(definition, main_entries)
                        outcome = None
                    else:
                        ended = await run.execute(self.phases.main_body(definition, run))
                        outcome = await self.phases.main_ended(definition, run, ended)
                    if outcome is None or (outcome.kind == "parked" and self.runner.signalled):
                        continue
                    break
                self.alarm_failures = 0
            except (StorageFailure, StorageReadError) as exc:
                await self._after_failure(exc.cause)
            except WorkflowError as exc:
                await self._after_failure(exc)
            except Exception as exc:
                log.exception("workkit_workflow: the runner failed")
                await self._after_failure(exc)
        except BaseException as exc:  # the object died under it, or the run was cancelled
            died = exc
            raise
        finally:
            # In this frame, not a wrapper's: one coroutine less held while it runs.
            execution.run = None
            self.runner.finished(died)

    async def _after_failure(self, exc: BaseException) -> None:
        self.execution.forget()
        self.alarm_unset = not await self.retry_later(exc)

    async def _next_phase(self) -> tuple[Workflow, Entries, Entries] | bool:
        """Read the execution and start its next incarnation: the phase to run (its
        definition and journal), or True to read again (a signal came), False when
        there is nothing to run."""
        execution = self.execution
        self.runner.mark()
        begun = execution.begun
        if begun is not None and begun[1] == execution.writes:
            snapshot = begun[0]  # its creation's records, all the object holds (``Requests._create``)
        else:
            snapshot = await execution.storage.list(limit=_pages.FIRST_READ)
        paged = len(snapshot) >= _pages.FIRST_READ  # a long journal: read by pages (``_pages``)
        if paged:
            heads = [observer.HEAD for observer in execution.observers]
            snapshot = await read_execution(execution.storage, heads)
        if not self._load(snapshot):
            await execution.storage.set_alarm(None)
            return False
        for observer in execution.observers:
            await observer.restore()  # before this drive writes (history/_recovery.py)
        state = execution.state
        assert state is not None and execution.meta is not None
        if state["phase"] == "done":
            await self.retention.on_done()  # hook(control): keeps or deletes the storage
            return False
        if is_paused(state):  # hook(control): a paused execution starts no phase
            return await self._park_paused()
        # versions: the name and version in its meta; without them here it is blocked.
        definition = await resolve(execution, self.registry, self.runner)
        if definition is None:
            return self.runner.signalled
        if needs_slot(execution) and not await wait_for_slot(execution, self.runner):
            return self.runner.signalled  # concurrency limits: parked until a slot is ours
        state = execution.state
        assert state is not None
        # The main phase replays from its journal's text, decoding an entry as it reaches it
        # (``_pages``); a cancel or the compensation phase reads them all.
        held = state["phase"] == "main" and not execution.cancel_requested
        main_entries, comp_entries = self._entries(snapshot, held=held)
        if paged:
            main_entries, comp_entries = await self._paged_entries(state, snapshot)
        if not await self._start_incarnation(definition, state, snapshot[jn.STATE]):
            return self.runner.signalled  # paused by the recovery cap
        return definition, main_entries, comp_entries

    async def _park_paused(self) -> bool:
        """Park with no alarm (nothing is due while paused); True if a signal came meanwhile."""
        now = self.execution.now()
        changes = {"wake_at": None, "driving": None}
        await self.execution.write_state(changes, alarm=self.runner.park_alarm(None, now))
        return self.runner.signalled

    def _load(self, snapshot: Mapping[str, str]) -> bool:
        """Take the execution's records from a full snapshot; False if it has none."""
        execution = self.execution
        meta_text, state_text = snapshot.get(jn.META), snapshot.get(jn.STATE)
        if meta_text is None or state_text is None:
            return False
        begun = execution.begun
        if begun is None or begun[0][jn.STATE] != state_text or execution.meta is None:
            execution.meta = jn.decode_record(jn.META, meta_text)
            execution.state = decode_state(state_text)
        # Else its creation began it and nothing was written since (``Requests._create``):
        # the records it cached are these, as written; not decoded into copies of them.
        execution.loaded = True
        for observer in execution.observers:
            observer.load(snapshot, complete=True)
        return True

    def _entries(self, snapshot: Mapping[str, str], *, held: bool = False) -> tuple[Entries, Entries]:
        """The journal of both phases; fills the inbox and the recorded idempotent results.
        ``held``: the main phase's entries stay text in a window read whole, each decoded as
        the phase reaches it (its idempotency keys are recorded then, or when a step looks
        one up: ``JournalWindow.scan_hashes``)."""
        execution = self.execution
        main: Entries = {}
        comp: Entries = {}
        texts: dict[int, str] = {}
        inbox: dict[str, dict[str, Any]] = {}
        idempotent: dict[str, dict[str, Any]] = {}
        main_at, idempotent_at = len(jn.MAIN), len(jn.IDEMPOTENT)
        # One pass over the records (a journal's entries are nearly all of them).
        for key, text in snapshot.items():
            if key.startswith(jn.MAIN):
                op = int(key[main_at:])  # ``jn.op_of(key)``, a call less an entry
                if held:
                    texts[op] = text
                else:
                    main[op] = jn.decode_record(key, text)
            elif key.startswith(jn.COMPENSATION):
                comp[jn.op_of(key)] = jn.decode_record(key, text)
            elif key.startswith(jn.INBOX):
                inbox[key] = jn.decode_record(key, text)
            elif key.startswith(jn.IDEMPOTENT):
                idempotent[key[idempotent_at:]] = jn.decode_record(key, text)
        execution.inbox.update(inbox)
        execution.idempotent = idempotent
        execution.keyed = {
            str(e["idempotency_hash"]): jn.op_key(jn.MAIN, op)
            for op, e in main.items()
            if e.get("status") == "completed" and e.get("idempotency_hash")
        }
        if held:
            return JournalWindow.whole(execution.storage, jn.MAIN, texts, execution.keyed), comp
        return main, comp

    async def _paged_entries(
        self, state: Mapping[str, Any], snapshot: Mapping[str, str]
    ) -> tuple[Entries, Entries]:
        """The entries of a journal too long to hold: the main phase reads its own
        a page at a time; a cancel or the compensation phase reads them all."""
        storage = self.execution.storage
        if state["phase"] == "main" and not self.execution.cancel_requested:
            end = await journal_end(storage, jn.MAIN)
            return JournalWindow(storage, jn.MAIN, end, self.execution.keyed), {}
        main = await storage.list(prefix=jn.MAIN)
        comp = await storage.list(prefix=jn.COMPENSATION)
        return self._entries({**snapshot, **main, **comp})

    async def _start_incarnation(self, definition: Workflow, state: Mapping[str, Any], text: str) -> bool:
        """Begin the drive's incarnation (``text``: its state record as read); False when,
        instead, the recovery cap paused the execution (``_recoveries``)."""
        execution = self.execution
        begun, execution.begun = execution.begun, None
        recovers = not self.incarnated and begun is None and bool(state.get("driving"))
        self.incarnated = True
        if begun is not None and begun[0][jn.STATE] == text:  # its creation began it; its state is as written
            if execution.faulting:
                execution.fault("after_incarnation", incarnation=int(state.get("incarnation", 0)))
            return True
        now = execution.now()
        changes: dict[str, Any] = {
            # Begun by its creation, changed since (a cancel came first): still its first.
            "incarnation": int(state.get("incarnation", 0)) + (begun is None),
            "wake_at": None,
            "blocked": None,
            "driving": True,
        }
        if "stalled" in state:
            changes["stalled"] = None  # earlier releases wrote it for an unknown workflow
        if state["status"] in ("pending", "sleeping", "waiting", "blocked"):
            changes["status"] = "running"
        if state.get("started_at") is None:
            changes["started_at"] = now
        if recovers:
            mark = await journal_mark(execution.storage, state["phase"])
            changes.update(recovery_changes(state, mark, definition.max_recoveries, now))
            if changes.get("paused"):
                await execution.write_state(changes, alarm=self.runner.park_alarm(None, now))
                return False
        await execution.write_state(changes, alarm=now + self.lease)
        if execution.faulting:
            execution.fault("after_incarnation", incarnation=changes["incarnation"])
        return True
