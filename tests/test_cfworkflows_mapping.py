"""The Cloudflare Workflows backend on CPython: the mappings, and the run adapter over
a small Python fake of the SDK's ``step`` wrapper (the JS engine fake runs under
Pyodide in test_cfworkflows_pyodide.py)."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from workkit_workflow import (
    DurableWorkflows,
    NonRetryableError,
    RetryPolicy,
    Workflow,
    create_durable_workflow,
    workflow,
)
from workkit_workflow.cfworkflows import _client as cfw_client
from workkit_workflow.cfworkflows import _entrypoint as cfw
from workkit_workflow.cfworkflows import _mapping
from workkit_workflow.errors import (
    ExecutionConflictError,
    ExecutionNotFinishedError,
    InvalidRequestError,
    SerializationError,
    StepFailedError,
    TransportError,
    WorkflowError,
)
from workkit_workflow.local import LocalNamespace

# -- pure mappings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 seconds"), (0.2, "1 second"), (1, "1 second"), (1.0000000001, "1 second"), (10, "10 seconds")],
)
def test_durations_are_whole_second_strings(seconds: float, text: str) -> None:
    assert _mapping.format_duration(seconds) == text


def test_durations_refuse_nonsense() -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            _mapping.format_duration(bad)


def test_retry_policy_translation() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=2.0, max_delay=60.0, backoff_multiplier=3.0)
    assert _mapping.step_config(policy, None, native_retries=True) == {
        "retries": {"limit": 3, "delay": "2 seconds", "backoff": "exponential"}
    }
    constant = RetryPolicy(max_attempts=1, initial_delay=5.0, max_delay=5.0, backoff_multiplier=1.0)
    assert _mapping.step_config(constant, 30.0, native_retries=True) == {
        "retries": {"limit": 0, "delay": "5 seconds", "backoff": "constant"},
        "timeout": "30 seconds",
    }
    # Old SDKs: one attempt per engine step, the adapter retries.
    assert _mapping.step_config(policy, 0.5, native_retries=False)["retries"]["limit"] == 0
    assert _mapping.step_config(policy, 0.5, native_retries=False)["timeout"] == "1 second"


@pytest.mark.parametrize(
    ("engine", "ours"),
    [
        ("queued", "pending"),
        ("unknown", "pending"),
        ("running", "running"),
        ("waitingForPause", "running"),
        ("waiting", "waiting"),
        ("paused", "paused"),
        ("complete", "completed"),
        ("errored", "failed"),
        ("terminated", "cancelled"),
    ],
)
def test_status_mapping(engine: str, ours: str) -> None:
    assert _mapping.map_status(engine) == ours


def test_unknown_status_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        _mapping.map_status("exploded")


def test_outputs_become_json_within_one_mib() -> None:
    assert _mapping.json_output({"a": (1, 2), "b": None}, what="x") == {"a": [1, 2], "b": None}
    with pytest.raises(SerializationError, match="1048576"):
        _mapping.json_output("x" * (1 << 20), what="x")
    with pytest.raises(SerializationError):
        _mapping.json_output({1, 2}, what="x")


def test_class_names() -> None:
    flow = Workflow("order-flow", register=False).step("a", lambda i, p, c: 1)
    cls = flow.as_cloudflare_workflow()
    assert cls.__name__ == "OrderFlow"
    assert flow.as_cloudflare_workflow("MyFlow").__name__ == "MyFlow"
    assert cfw._class_name("2fa check") == "Workflow2faCheck"
    with pytest.raises(ValueError):
        flow.as_cloudflare_workflow("not a name")


class _Binding:
    async def create(self, options: Any) -> Any: ...

    async def get(self, id: str) -> Any: ...


def test_backend_selection() -> None:
    assert cfw_client.is_workflows_binding(_Binding())
    client = create_durable_workflow(_Binding())
    assert isinstance(client, cfw_client.WorkflowsClient) and isinstance(client, DurableWorkflows)
    local = LocalNamespace()
    assert not cfw_client.is_workflows_binding(local)
    assert type(create_durable_workflow(local)) is DurableWorkflows
    assert isinstance(create_durable_workflow(object(), backend="cf-workflows"), cfw_client.WorkflowsClient)
    with pytest.raises(InvalidRequestError):
        create_durable_workflow(local, backend="sqs")


# -- the run adapter over a Python fake step ------------------------------------------------------


class FakeStep:
    """The SDK's step wrapper over an engine that caches by name + count (compact)."""

    def __init__(self, cache: dict[str, Any] | None = None) -> None:
        self.cache: dict[str, Any] = {} if cache is None else cache
        self.counts: Counter[str] = Counter()
        self.configs: dict[str, Any] = {}
        self.sleeps: list[tuple[str, Any]] = []
        self.events: dict[str, list[Any]] = {}

    def _key(self, kind: str, name: str) -> str:
        self.counts[kind + name] += 1
        return f"{kind}:{name}-{self.counts[kind + name]}"

    def do(self, name: str, *, concurrent: bool = False, config: Any = None) -> Callable[..., Any]:
        def decorate(fn: Callable[..., Any]) -> Callable[[], Any]:
            assert list(inspect.signature(fn).parameters) == ["ctx"]

            async def run() -> Any:
                key = self._key("do", name)
                if key in self.cache:
                    kind, value = self.cache[key]
                    if kind == "error":
                        raise Exception(value)
                    return value
                self.configs[key] = config
                limit = config["retries"]["limit"]
                for attempt in range(1, limit + 2):
                    try:
                        value = await fn({"attempt": attempt, "step": {"name": name}})
                    except Exception as exc:
                        if type(exc).__name__ == "NonRetryableError" or attempt > limit:
                            self.cache[key] = ("error", str(exc))
                            raise Exception(str(exc)) from None
                        continue
                    self.cache[key] = ("value", value)
                    return value
                raise AssertionError("unreachable")

            return run

        return decorate

    async def sleep(self, name: str, duration: Any) -> None:
        assert isinstance(duration, str)
        self.sleeps.append((self._key("sleep", name), duration))

    async def sleep_until(self, name: str, when: Any) -> None:
        assert isinstance(when, datetime) and when.tzinfo is not None
        self.sleeps.append((self._key("sleep", name), when))

    async def wait_for_event(self, name: str, event_type: str, /, timeout: str = "24 hours") -> Any:
        key = self._key("wait", name)
        if key in self.cache:
            return self.cache[key]
        queue = self.events.get(event_type) or []
        if not queue:
            raise Exception(f"Execution timed out after {timeout}")
        self.cache[key] = {"payload": queue.pop(0), "type": event_type, "timestamp": None}
        return self.cache[key]


async def run(flow: Workflow, step: FakeStep, payload: Any = None, *, native: bool = True) -> Any:
    event = {"payload": payload, "instanceId": "inst-1", "workflowName": "wf"}
    return await cfw.run_definition(flow, event, step, native_retries=native)


async def test_linear_flow_replays_from_the_cache() -> None:
    calls: Counter[str] = Counter()

    def count(name: str) -> Callable[..., Any]:
        def handler(i: Any, p: Any, c: Any) -> Any:
            calls[name] += 1
            return {"step": name, "attempt": c.attempt, "key": c.idempotency_key, "prev": p}

        return handler

    flow = Workflow("linear", register=False).step("a", count("a")).step("b", count("b"))
    step = FakeStep()
    out = await run(flow, step, {"n": 1})
    assert out["key"] == "inst-1:b" and out["prev"]["step"] == "a"
    assert await run(flow, FakeStep(step.cache)) == out
    assert calls == {"a": 1, "b": 1}
    assert step.configs["do:a-1"]["retries"] == {"limit": 2, "delay": "1 second", "backoff": "exponential"}


async def test_non_retryable_without_the_sdk_uses_a_same_named_class() -> None:
    tries = Counter[str]()

    def fails() -> None:
        tries["x"] += 1
        raise NonRetryableError("stop")

    @workflow("nr", register=False, retry=RetryPolicy(max_attempts=5))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("x", fails)

    step = FakeStep()
    with pytest.raises(Exception, match="stop"):
        await run(flow, step)
    assert tries["x"] == 1
    assert step.cache["do:x (failure)-1"][1]["code"] == "non_retryable"


async def test_fan_out_names_sleeps_and_waits() -> None:
    @workflow("mixed", register=False)
    async def flow(ctx: Any, input: Any) -> Any:
        values = await asyncio.gather(*(ctx.step("item", lambda i=i: i) for i in range(3)))
        await ctx.sleep("nap", "90s")
        await ctx.sleep_until("later", 4_000_000_000)
        got = await ctx.wait_for_event("evt", "go", timeout="1h")
        missing = await ctx.wait_for_event("evt", "absent", timeout="1s", default="fallback")
        return [values, got, missing]

    step = FakeStep()
    step.events["go"] = [{"ok": True}]
    assert await run(flow, step) == [[0, 1, 2], {"ok": True}, "fallback"]
    assert sorted(k for k in step.cache if k.startswith("do:")) == [
        "do:item #2-1",
        "do:item #3-1",
        "do:item-1",
    ]
    assert step.sleeps[0] == ("sleep:nap-1", "90 seconds")
    assert step.sleeps[1][0] == "sleep:later-1"


async def test_old_sdk_retries_with_durable_sleeps() -> None:
    tries = Counter[str]()

    def flaky() -> str:
        tries["x"] += 1
        if tries["x"] < 3:
            raise ConnectionError("again")
        return "ok"

    @workflow("flaky", register=False, retry=RetryPolicy(max_attempts=3, initial_delay=4.0))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("x", flaky)

    step = FakeStep()
    assert await run(flow, step, native=False) == "ok"
    assert step.sleeps == [("sleep:x (retry 1)-1", "4 seconds"), ("sleep:x (retry 2)-1", "8 seconds")]
    assert "do:x (attempt 3)-1" in step.cache


async def test_too_long_names_are_refused() -> None:
    @workflow("long", register=False)
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("s" * 250, lambda: 1)

    with pytest.raises(SerializationError, match="too long"):
        await run(flow, FakeStep())


# -- the client over a Python fake binding -------------------------------------------------------------


class FakeInstance:
    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls: list[str] = []

    async def status(self) -> dict[str, Any]:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    async def terminate(self) -> None:
        self.calls.append("terminate")

    async def sendEvent(self, event: Any) -> None:
        self.calls.append(f"event:{event['type']}")

    async def restart(self, options: Any = None) -> None:
        start = (options or {}).get("from")
        self.calls.append("restart" if start is None else f"restart:{start}")


class FakeBinding:
    def __init__(self, instance: FakeInstance) -> None:
        self.instance = instance
        self.created: list[Any] = []

    async def create(self, options: Any) -> FakeInstance:
        if self.created:
            raise Exception("(instance.already_exists) Instance already exists")
        self.created.append(options)
        return self.instance

    async def get(self, id: str) -> FakeInstance:
        return self.instance


async def test_client_maps_results_and_errors() -> None:
    instance = FakeInstance(
        [{"status": "queued"}, {"status": "running"}, {"status": "errored", "error": "Error: boom"}]
    )
    client = create_durable_workflow(FakeBinding(instance))
    handle = await client.run("wf", {"a": 1}, execution_id="e-1")
    assert handle.created is True
    result = await handle.result(timeout=5)
    assert not result.ok and result.status == "failed"
    assert result.error is not None and result.error.error == {
        "code": "Error",
        "name": "Error",
        "message": "Error: boom",
    }
    again = await client.run("wf", {"a": 1}, execution_id="e-1")
    assert again.created is False
    assert await again.cancel() is False
    with pytest.raises(InvalidRequestError):
        await client.restart("e-1", from_step="x", new_execution_id="e-9")
    with pytest.raises(InvalidRequestError, match="kind"):
        await client.restart("e-1", from_step="x", kind="task")
    await client.restart("e-1")
    await client.restart("e-1", from_step="nap", kind="sleep", occurrence=2)
    assert instance.calls == ["restart", "restart:{'name': 'nap', 'count': 2, 'type': 'sleep'}"]


async def test_client_result_timeout() -> None:
    client = create_durable_workflow(FakeBinding(FakeInstance([{"status": "waiting"}])))
    handle = client.execution("e-2")
    with pytest.raises(ExecutionNotFinishedError):
        await handle.result(timeout=0.05)
    assert await handle.send_event("go", {"x": 1})
    assert await handle.cancel() is True


async def test_a_broken_idempotency_key_fails_the_step_without_retries() -> None:
    tries = Counter[str]()

    def work() -> int:
        tries["work"] += 1
        return 1

    def key(ctx: Any) -> str:
        raise KeyError("order_id")

    @workflow("bad-key", register=False, retry=RetryPolicy(max_attempts=4))
    async def flow(ctx: Any, input: Any) -> Any:
        return await ctx.step("work", work, idempotency_key=key)

    step = FakeStep()
    with pytest.raises(Exception, match="idempotency_key"):
        await run(flow, step)
    assert tries["work"] == 0
    assert step.cache["do:work (failure)-1"][1]["code"] == "serialization_error"


# -- the edges the real runtime exposed (tests/test_realruntime_cfworkflows.py) -------------


class _WrappingBase:
    """Like the runtime's built-in ``WorkflowEntrypoint``: wraps ``run`` (found by getattr)
    and ``__init__`` of every subclass, and counts how many wrappers a call went through."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.env = env

    def __init_subclass__(cls, **kwargs: Any) -> None:
        run, init = cls.run, cls.__init__  # type: ignore[attr-defined]

        async def wrapped_run(self: Any, event: Any, step: Any) -> Any:
            return await run(self, event, [*step, "wrap"])

        def wrapped_init(self: Any, ctx: Any, env: Any) -> None:
            init(self, ctx, [*env, "wrap"])

        cls.run = wrapped_run  # type: ignore[attr-defined]
        cls.__init__ = wrapped_init  # type: ignore[method-assign]


def test_a_subclass_of_the_generated_class_is_wrapped_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def fake_run(definition: Any, event: Any, step: Any, **kwargs: Any) -> Any:
        seen.append(step)
        return {"ok": None}

    monkeypatch.setattr(cfw, "workflow_entrypoint_base", lambda: _WrappingBase)
    monkeypatch.setattr(cfw, "run_definition", fake_run)
    flow = Workflow("wrap-once", register=False).step("a", lambda i, p, c: 1)

    class OrderFlow(flow.as_cloudflare_workflow()):  # type: ignore[misc]
        pass

    class Deeper(OrderFlow):
        def extra(self) -> int:
            return 1

    plain = flow.as_cloudflare_workflow("Plain")
    for cls in (OrderFlow, Deeper, plain):
        entry = cls(None, [])
        assert entry.env == ["wrap"]
        assert asyncio.run(entry.run({}, [])) == {"ok": None}
        assert seen.pop() == ["wrap"], cls.__name__


def test_a_failed_run_carries_its_structured_failure_to_the_client() -> None:
    failure = StepFailedError(
        "step 'charge' failed: card declined",
        step="charge",
        attempt=2,
        error={"code": "non_retryable", "message": "card declined", "attempt": 2},
    )
    raised = cfw.InstanceFailure(cfw.failure_payload(failure))
    # The engine keeps a PythonError's message: the traceback, ending with this text.
    message = f"PythonError: Traceback (most recent call last):\n  ...\n{type(raised).__name__}: {raised}\n"
    instance = FakeInstance([{"status": "errored", "error": {"name": "Error", "message": message}}])
    result = asyncio.run(cfw_client.WorkflowsHandle(FakeBinding(instance), "e-9").result(timeout=1))
    assert result.error is not None
    assert (result.error.code, result.error.failed_step, result.error.step_attempt) == (
        "non_retryable",
        "charge",
        2,
    )
    assert result.error.error == {"code": "non_retryable", "message": "card declined", "attempt": 2}
    assert "Traceback" not in result.error.message
    assert cfw.decode_failure("Error: boom") is None
    assert cfw.decode_failure(cfw.FAILURE_MARK + "{not json") is None


async def test_instance_calls_are_awaited_until_settled() -> None:
    """The built-in SDK's instance wrapper: ``async def status(): return js_promise``."""

    class DoublyAsync:
        async def status(self) -> Any:
            return asyncio.sleep(0, {"status": "complete", "output": 3})

        async def terminate(self) -> Any:
            return asyncio.sleep(0, None)

    class Binding:
        async def get(self, id: str) -> Any:
            return DoublyAsync()

    handle = cfw_client.WorkflowsHandle(Binding(), "e-3")
    assert (await handle.result(timeout=1)).value == 3
    assert await handle.status() == "completed"


@pytest.mark.parametrize(
    ("error", "abort"),
    [
        (Exception("Error: Aborting engine: User called terminate"), True),
        (Exception("Aborting engine: User called pause"), True),
        (RuntimeError("boom"), False),
    ],
)
def test_engine_aborts_are_told_apart_from_failures(error: Exception, abort: bool) -> None:
    assert _mapping.is_engine_abort(error) is abort


async def test_an_engine_abort_runs_no_compensation_and_is_no_timeout() -> None:
    compensated: list[Any] = []

    class AbortingStep:
        def do(self, name: str, config: Any = None) -> Callable[[Any], Any]:
            def decorate(fn: Any) -> Any:
                async def call() -> Any:
                    raise Exception("Error: Aborting engine: User called pause")

                return call

            return decorate

        async def wait_for_event(self, name: str, event_type: str, timeout: str = "") -> Any:
            raise Exception("Error: Aborting engine: User called terminate")

    stepped = Workflow("abort-step", register=False).step("a", lambda i, p, c: 1)
    stepped.on_failure(compensated.append)

    @workflow("abort-wait", register=False)
    async def waiting(ctx: Any, input: Any) -> Any:
        return await ctx.wait_for_event("w", "go", timeout="5s", default="timed out")

    waiting.on_failure(compensated.append)
    for flow in (stepped, waiting):
        with pytest.raises(Exception, match="Aborting engine"):
            await cfw.run_definition(flow, {"instanceId": "i"}, AbortingStep(), native_retries=True)
    assert compensated == []


async def test_a_child_workflow_is_refused_with_a_clear_error() -> None:
    @workflow("kid-cfw", register=False)
    async def kid(ctx: Any, input: Any) -> Any:
        return input

    @workflow("parent-cfw", register=False)
    async def parent(ctx: Any, input: Any) -> Any:
        return await ctx.child(kid, input)

    with pytest.raises(WorkflowError) as raised:
        await run(parent, FakeStep(), 1)
    assert raised.value.code == "unsupported_on_backend"
    assert "Durable Object backend" in raised.value.message


class PausableInstance(FakeInstance):
    async def pause(self) -> None:
        self.calls.append("pause")
        self.statuses = [{"status": "paused"}]

    async def resume(self) -> None:
        self.calls.append("resume")
        self.statuses = [{"status": "running"}]


async def test_client_pause_unpause_and_delete_map_onto_the_instance() -> None:
    instance = PausableInstance([{"status": "running"}])
    handle = create_durable_workflow(FakeBinding(instance)).execution("e-3")
    assert await handle.pause() is True
    assert await handle.status() == "paused"
    assert await handle.pause() is False
    assert await handle.unpause() is True
    assert await handle.unpause() is False
    assert instance.calls == ["pause", "resume"]
    with pytest.raises(InvalidRequestError, match="no delete"):
        await handle.delete()
    instance.statuses = [{"status": "complete", "output": 1}]
    with pytest.raises(ExecutionConflictError, match="cannot be paused"):
        await handle.pause()
