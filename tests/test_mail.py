"""The mail outbox (``engine._mail``): requests from one execution to another object,
written with the state change that causes them and delivered after it.

A *sender* execution parks waiting for an event that never comes; the tests
write mail from it the way the engine does (the records in one write), to a
*receiver* execution that waits for a ``ping`` event: the message is that
event, its id the receiver's idempotency key.
"""

from __future__ import annotations

import json
from typing import Any

from workkit_workflow import WorkflowContext, workflow
from workkit_workflow.engine._ports import WireResponse
from workkit_workflow.errors import TransportError
from workkit_workflow.testing import WorkflowTestEnv

from conftest import unique


def _flows() -> tuple[Any, Any]:
    @workflow(unique("mail-receiver"))
    async def receiver(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.wait_for_event("ping", "ping")

    @workflow(unique("mail-sender"))
    async def sender(ctx: WorkflowContext, input: Any) -> Any:
        return await ctx.wait_for_event("never", "never")

    return receiver, sender


def _core(env: WorkflowTestEnv, name: str) -> Any:
    return env.ns._instance(name).instance._object.core


async def _send_ping(env: WorkflowTestEnv, sender: str, *, payload: Any = "hello") -> Any:
    core = _core(env, sender)
    await core.execution.ensure_loaded()
    body = {"type": "ping", "payload": payload, "id": f"{sender}-ping"}
    await core.execution.write(core.mail.message("recv-1", "POST", "/event", body, id=f"{sender}-ping"))
    return core


async def _start_both(env: WorkflowTestEnv) -> tuple[Any, Any]:
    receiver, sender = _flows()
    recv = await env.run(receiver, None, execution_id="recv-1")
    send = await env.run(sender, None, execution_id="send-1")
    assert await recv.status() == "waiting"
    assert await send.status() == "waiting"
    return recv, send


async def _drain(env: WorkflowTestEnv, name: str) -> None:
    """Let virtual time pass until ``name`` has no mail left (its alarm delivers it)."""
    for _ in range(30):
        if not await _pending_mail(env, name):
            return
        await env.clock.sleep(1.0)
        await env.settle()
    raise AssertionError(f"{name} still has mail pending")


async def _pending_mail(env: WorkflowTestEnv, name: str) -> dict[str, str]:
    return env.ns.backend.list(name, "mail:0", None, None, None, False)


async def test_mail_is_delivered_once_and_dropped(env: WorkflowTestEnv) -> None:
    recv, send = await _start_both(env)
    core = await _send_ping(env, "send-1")
    result = await env.result(recv)
    assert result.ok and result.value == "hello"
    assert await _pending_mail(env, "send-1") == {}
    assert core.mail.delivered == 1
    # The receiver took one event: the id made any repeat a duplicate.
    assert (await recv.journal())[0]["event_id"] == "send-1-ping"
    assert await send.status() == "waiting"  # the sender is undisturbed


async def test_a_write_calls_the_mail_outbox_only_while_a_message_waits(env: WorkflowTestEnv) -> None:
    """With no message waiting, a write skips the outbox's ``alarm_for`` and ``kick``; the
    write that carries one makes both due, and they stay due until it is delivered."""
    recv, _ = await _start_both(env)
    core = _core(env, "send-1")
    await core.execution.ensure_loaded()
    mail = core.mail
    assert (mail.undelivered, mail.kick_due, mail.steers_kept_alarm, mail.captures) == (False,) * 4
    await core.execution.write({"x:plain": "1"})
    assert (mail.kick_due, mail.steers_kept_alarm) == (False, False)
    records = mail.message("recv-1", "POST", "/event", {"type": "x"})
    assert mail.captures  # a message is made: the write that carries it is looked at
    await core.execution.write({"x:plain": "1b"})  # not that write yet
    assert mail.captures and not mail.undelivered
    await core.execution.write(records)
    assert mail.undelivered and not mail.captures
    await _send_ping(env, "send-1")
    assert mail.steers_kept_alarm  # the write's alarm went through it (alarm_for)
    result = await env.result(recv)
    assert result.ok and result.value == "hello" and mail.delivered == 2  # with the one above
    assert await _pending_mail(env, "send-1") == {}
    await core.execution.write({"x:plain": "2"})  # its kick finds nothing left: not due again
    assert (mail.undelivered, mail.kick_due, mail.steers_kept_alarm) == (False, False, False)


async def test_failed_delivery_is_retried_on_the_alarm(env: WorkflowTestEnv) -> None:
    recv, _ = await _start_both(env)
    real = env.ns.request
    attempts: list[str] = []

    async def flaky(name: str, method: str, path: str, body: Any = None, query: Any = None) -> WireResponse:
        if name == "recv-1" and path == "/event":
            attempts.append(path)
            if len(attempts) == 1:
                raise TransportError("the receiver's object was reset")
            if len(attempts) == 2:
                return WireResponse(503, {"error": {"code": "storage_unavailable"}})
        return await real(name, method, path, body, query)

    env.ns.request = flaky  # type: ignore[method-assign]
    await _send_ping(env, "send-1")
    await env.settle()
    assert len(attempts) == 1 and len(await _pending_mail(env, "send-1")) == 1
    # Only the sender's alarm (kept set for its mail) can deliver it now.
    assert "send-1" in env.ns.backend.alarms()
    result = await env.result(recv)
    assert result.ok and result.value == "hello"
    assert len(attempts) == 3
    assert await _pending_mail(env, "send-1") == {}


async def test_mail_survives_a_crash_between_write_and_delivery(env: WorkflowTestEnv) -> None:
    recv, _ = await _start_both(env)
    env.faults.crash_at("in_mail", execution_id="send-1")
    await _send_ping(env, "send-1")
    await env.settle()
    assert env.faults.crashes and "send-1" not in env.ns.live_objects()
    assert len(await _pending_mail(env, "send-1")) == 1
    await env.restart()  # SQLite: a new process on the same file
    result = await env.result(recv)
    assert result.ok and result.value == "hello"
    assert await _pending_mail(env, "send-1") == {}


async def test_a_repeated_delivery_is_a_duplicate_at_the_receiver(env: WorkflowTestEnv) -> None:
    recv, _ = await _start_both(env)
    # The receiver answered but the sender died before dropping the message: it is sent again.
    real = env.ns.request
    answers: list[int] = []

    async def twice(name: str, method: str, path: str, body: Any = None, query: Any = None) -> WireResponse:
        answer = await real(name, method, path, body, query)
        if name == "recv-1" and path == "/event":
            answers.append(answer.status)
            if len(answers) == 1:
                env.ns.evict("send-1")  # dies before it can drop the message
                raise TransportError("the sender was reset")
        return answer

    env.ns.request = twice  # type: ignore[method-assign]
    await _send_ping(env, "send-1")
    result = await env.result(recv)
    assert result.ok and result.value == "hello"
    await _drain(env, "send-1")
    assert answers == [202, 200]  # the second is a duplicate, even after the receiver finished
    assert await _pending_mail(env, "send-1") == {}


async def test_a_definitive_refusal_is_a_dead_letter(env: WorkflowTestEnv) -> None:
    _, send = await _start_both(env)
    core = _core(env, "send-1")
    await core.execution.ensure_loaded()
    # No execution has this id: 404, which no retry can fix.
    body = {"type": "ping", "payload": 1}
    await core.execution.write(core.mail.message("nobody", "POST", "/event", body, id="m-1"))
    await env.settle()
    assert await _pending_mail(env, "send-1") == {}
    dead = env.ns.backend.list("send-1", "mailx:", None, None, None, False)
    assert len(dead) == 1
    (record,) = (json.loads(text) for text in dead.values())
    assert record["to"] == "nobody" and record["answer"]["status"] == 404
    assert core.mail.rejected == 1
    assert await send.status() == "waiting"


async def test_a_refusal_can_come_back_as_an_event(env: WorkflowTestEnv) -> None:
    _, send = await _start_both(env)
    core = _core(env, "send-1")
    await core.execution.ensure_loaded()
    message = core.mail.message(
        "nobody",
        "POST",
        "/event",
        {"type": "ping"},
        on_rejected={"event": "never", "event_id": "refused-1"},
    )
    await core.execution.write(message)
    result = await env.result(send)
    assert result.ok
    assert result.value["ok"] is False and result.value["rejected"]["status"] == 404
    assert result.value["rejected"]["error"]["code"] == "execution_not_found"


async def test_a_failed_delete_after_delivery_sends_the_message_again(env: WorkflowTestEnv) -> None:
    recv, _ = await _start_both(env)
    failed: list[str] = []

    def refuse_first_delete(obj: str, puts: Any, deletes: Any) -> None:
        if obj == "send-1" and any(k.startswith("mail:0") for k in deletes) and not failed:
            failed.append(obj)
            raise OSError("disk full")

    env.ns.write_hook = refuse_first_delete
    core = await _send_ping(env, "send-1")
    result = await env.result(recv)
    assert result.ok and result.value == "hello"
    await _drain(env, "send-1")
    assert failed == ["send-1"]
    assert core.mail.delivered == 1  # counted once: the first delivery's delete failed
