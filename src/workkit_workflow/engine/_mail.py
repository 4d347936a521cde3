"""The mail outbox: durable requests from one execution to another object of its namespace.

An execution sends mail (object name, method, path, JSON body) by adding the
records :meth:`Mail.message` returns to the write of the state change that
causes it, so the change and its mail exist together or not at all. After
the write, a background task delivers the pending messages in the order they
were written, each one request through the host's namespace (``host.peers``),
and deletes each once answered:

* a 2xx answer: delivered;
* a definitive 4xx (anything but 408 and 429): retrying cannot fix it. The
  message moves to a dead-letter record ``mailx:<seq>`` with the answer, and
  the sender's ``on_rejected`` hook (if any) is told before the message is
  deleted, so a crash between the two tells it again;
* anything else (5xx, a transport error, no namespace): the message waits and
  is retried on the object's alarm with exponential backoff. The alarm stays
  set while any message is pending, even after the execution is done.

The delivery itself (single-flight, paged, backed off) is the shared
``_outbox.Delivery``; this module says what delivering a page of mail is.

Deliveries can repeat (a crash after the receiver answered, before the
delete): every message carries an ``id``, and the receiving route must be
idempotent for it (an event id, an execution id).

Storage layout (JSON text with ``"v": 1``)::

    mail:head           {"v":1, "seq": 7}     the last sequence used (never reused)
    mail:000000000007   {"v":1, "seq":7, "id":"...", "to":"obj", "method":"POST",
                         "path":"/event", "body":{...}, "created_at":..., "on_rejected":{...}}
    mailx:000000000007  the same, with "answer": {"status": 409, "body": {...}}

:class:`Mail` joins the execution as a journal observer (``_plugins``), ahead
of any other, so its ``alarm_for`` sees the engine's alarm first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ..errors import ExecutionConflictError, SerializationError
from . import _journal as jn
from ._outbox import Delivery
from ._plugins import ObservedExecution
from ._ports import KEEP_ALARM, Namespace, WireResponse
from ._signals import StorageFailure

log = logging.getLogger("workkit_workflow.mail")

PREFIX = "mail:"
HEAD = PREFIX + "head"
RECORD_PREFIX = PREFIX + "0"
"""Message keys are ``mail:`` + 12 zero-padded digits: they all start with ``mail:0``."""
DEAD = "mailx:"

BATCH = 20
"""Messages read per storage list while delivering."""

SEND_TIMEOUT = 15.0
"""Seconds one request may take before its delivery counts as failed."""

RETRYABLE_4XX = frozenset({408, 429})

Rejected = Callable[[dict[str, Any], WireResponse], Awaitable[None]]
"""``on_rejected(message, answer)``: the sender's hook for a definitive refusal."""

SendEvent = Callable[[str, Any, "str | None"], Awaitable[Any]]


class Inbox(Protocol):
    """What takes an execution's events (its requests)."""

    @property
    def send_event(self) -> SendEvent: ...


def reply_with_event(send_event: SendEvent) -> Rejected:
    """The hook that turns a refusal into an event in the sender's own inbox.

    A message composed with ``on_rejected={"event": type, "event_id": id}``
    delivers, when refused for good, an event of that type with payload
    ``{"ok": False, "rejected": {"status", "error"}}`` to the sending execution,
    which a wait (or a child operation) there consumes. The event id makes a
    repeat (a crash before the message was dropped) a duplicate.
    """

    async def rejected(message: dict[str, Any], answer: WireResponse) -> None:
        spec = message.get("on_rejected") or {}
        body = answer.body if isinstance(answer.body, dict) else {}
        payload = {"ok": False, "rejected": {"status": answer.status, "error": body.get("error")}}
        # A sender that has finished (conflict) has nobody left to tell.
        with contextlib.suppress(ExecutionConflictError):
            await send_event(str(spec["event"]), payload, spec.get("event_id"))

    return rejected


class Mail(Delivery):
    """One execution's outbox of requests to other objects."""

    HEAD = HEAD
    captures = False
    """True from a message's making (``message``) until a write carries its head: only
    then does ``capture`` learn anything (an execution that sends no mail pays nothing)."""
    kick_due = False
    steers_kept_alarm = False
    """Both False while no message waits: a write then need not call ``alarm_for`` nor
    ``kick`` (an execution that sends no mail pays for neither; ``undelivered`` sets them)."""

    def __init__(self, core: ObservedExecution, peers: Namespace | None) -> None:
        # Whether messages may wait in storage is learnt from writes and full reads.
        super().__init__(
            core, record_prefix=RECORD_PREFIX, batch=BATCH, undelivered=False, log=log, what="mail"
        )
        self.peers = peers
        self.inbox: Inbox | None = None
        """Where a definitive refusal of a message that asks for it becomes an event
        (the execution's requests: :func:`reply_with_event`)."""
        self.seq = 0
        self.delivered = 0
        self.rejected = 0

    # -- composing ---------------------------------------------------------------

    def message(
        self,
        to: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        id: str | None = None,
        on_rejected: Mapping[str, Any] | None = None,
        what: str | None = None,
    ) -> dict[str, str]:
        """The records that send one request: put them in the write that causes it.

        ``id`` names the message for the receiver's idempotency (default: the
        execution id and the sequence). ``on_rejected`` is kept with it and
        given back to the sender's hook if the receiver refuses it for good.
        ``what`` names the message in the SerializationError of a body that
        cannot be stored.
        """
        seq = self.seq + 1
        key = jn.seq_key(PREFIX, seq)
        record = {
            "seq": seq,
            "id": id or f"{self.core.execution_id}:mail:{seq}",
            "to": to,
            "method": method,
            "path": path,
            "body": body,
            "created_at": self.core.now(),
            "on_rejected": dict(on_rejected) if on_rejected else None,
        }
        text = jn.encode_record(key, record, what=what or f"message to {to!r}")
        self.seq = seq  # taken once the message can be sent (one that cannot leaves no trace)
        self.captures = True
        return {key: text, HEAD: jn.encode_record(HEAD, {"seq": seq}, what="mail head")}

    @property
    def undelivered(self) -> bool:
        """Whether messages may wait in storage (``Delivery``'s)."""
        return self._undelivered

    @undelivered.setter
    def undelivered(self, value: bool) -> None:
        self._undelivered = value
        if value:
            self.kick_due = self.steers_kept_alarm = True

    # -- inside the core's write (the JournalObserver hooks) --------------------------

    def load(self, records: Mapping[str, str], *, complete: bool) -> None:
        head_text = records.get(HEAD)
        if head_text is not None:
            # Never go back: a stale read must not make us reuse a sequence.
            self.seq = max(self.seq, int(jn.decode_record(HEAD, head_text).get("seq", 0)))
        if complete:
            self.undelivered = any(k.startswith(RECORD_PREFIX) for k in records)

    def capture(self, puts: Mapping[str, str], entries: Any = None) -> dict[str, str]:
        if HEAD in puts:
            self.undelivered = True
            self.captures = False
        return {}

    def kick(self) -> bool:
        super().kick()
        if not self._undelivered and (self._task is None or self._task.done()):
            self.kick_due = self.steers_kept_alarm = False  # until a message waits again
        return False

    def alarm_for(self, alarm: Any) -> Any:
        """Keep an alarm set while messages wait (the engine may clear it or keep none)."""
        if not self.undelivered:
            return alarm
        retry = self._retry_alarm()
        if alarm is None or alarm is KEEP_ALARM:
            # The engine wants none, or the one in storage may be none at all (a
            # parked execution waiting for an event): one due soon is safe, an
            # early alarm only re-parks. It is left to fire after the delivery,
            # never cleared here: another observer may rely on it by then.
            return retry
        return min(alarm, retry)

    # -- delivery ---------------------------------------------------------------------

    async def _deliver_loop(self) -> bool:
        try:
            return await super()._deliver_loop()
        except (Exception, StorageFailure) as exc:
            # Storage refused a delete or a dead letter, or the refusal hook failed: the
            # message stays and is sent again (its receiver deduplicates it).
            await self._failed({"to": "(pending mail)"}, f"delivery interrupted: {exc!r}")
            return False

    async def _deliver_page(self, found: dict[str, str]) -> bool:
        for key, text in found.items():
            if not await self._deliver(key, jn.decode_record(key, text)):
                return False
        return True

    async def _deliver(self, key: str, message: dict[str, Any]) -> bool:
        """Send one message; True once it is settled (delivered or dead), False to retry later."""
        self.core.fault("in_mail", to=message.get("to"), id=message.get("id"))
        try:
            answer = await self._send(message)
        except Exception as exc:
            await self._failed(message, repr(exc))
            return False
        if answer.ok:
            await self.core.storage.commit({}, [key])
            self.delivered += 1
            return True
        if 400 <= answer.status < 500 and answer.status not in RETRYABLE_4XX:
            await self._reject(key, message, answer)
            return True
        await self._failed(message, f"HTTP {answer.status}: {answer.body!r}"[:500])
        return False

    async def _send(self, message: dict[str, Any]) -> WireResponse:
        if self.peers is None:
            raise LookupError(
                "this object has no namespace to reach other objects through "
                "(WorkflowExecutionDO.namespace_binding names the env binding)"
            )
        request = self.peers.request(message["to"], message["method"], message["path"], message.get("body"))
        answer: WireResponse = await self._within(request, SEND_TIMEOUT, repr(message["to"]))
        return answer

    async def _reject(self, key: str, message: dict[str, Any], answer: WireResponse) -> None:
        """A definitive refusal: tell the sender, keep a dead letter, drop the message."""
        log.warning(
            "workkit_workflow: %s %s to %r was refused (%d): %r",
            message.get("method"),
            message.get("path"),
            message.get("to"),
            answer.status,
            answer.body,
        )
        if self.inbox is not None and message.get("on_rejected"):
            await reply_with_event(self.inbox.send_event)(message, answer)
        dead_key = DEAD + key[len(PREFIX) :]
        dead = {**message, "answer": {"status": answer.status, "body": answer.body}}
        try:
            text = jn.encode_record(dead_key, dead, what="dead letter")
        except SerializationError:
            dead["answer"] = {"status": answer.status}
            text = jn.encode_record(dead_key, dead, what="dead letter")
        await self.core.storage.commit({dead_key: text}, [key])
        self.rejected += 1

    async def _failed(self, message: dict[str, Any], why: str) -> None:
        await self._back_off("mail to %r not delivered: %s", message.get("to"), why)
