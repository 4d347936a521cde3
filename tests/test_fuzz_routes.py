"""Property-based fuzzing of every route of the execution object, and of the journal decoder.

Raw requests (any method, path, query and body bytes) go through
``LocalNamespace.fetch`` to objects in known states: a completed execution, one
waiting for an event, and one that does not exist. For every request:

* no answer is a server error (status >= 500);
* a rejected request (4xx) carries ``error.code`` and ``error.message``;
* a rejected request changes nothing in storage (every object, every key, alarms).

Examples are derandomized so CI runs the same cases every time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workkit_workflow import WorkflowContext, create_durable_workflow, workflow
from workkit_workflow.engine import _journal as jn
from workkit_workflow.engine._journal import JournalFormatError
from workkit_workflow.engine._ports import WireRequest, WireResponse
from workkit_workflow.local import LocalNamespace, VirtualClock

ROUTES = ["/execute", "/status", "/result", "/cancel", "/event", "/resume", "/journal", "/meta"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "post"]
OBJECTS = ["done", "waiting", "fresh"]
FIELDS = ["workflow", "input", "execution_id", "wait", "restart", "type", "payload", "id", "reason"]
FUZZ_SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@workflow("fuzz-done")
async def fuzz_done(ctx: WorkflowContext, input: Any) -> Any:
    return await ctx.step("one", lambda: {"ok": True, "input": input})


@workflow("fuzz-wait")
async def fuzz_wait(ctx: WorkflowContext, input: Any) -> Any:
    await ctx.step("one", lambda: 1)
    return await ctx.wait_for_event("go", "go")


# -- strategies ---------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["fuzz-done", "fuzz-wait", "nope", "", "x" * 300, *OBJECTS, "go", "\x00", "é" * 10]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
restart_specs = st.fixed_dictionaries(
    {
        "execution_id": st.sampled_from(["done", "other", "", "bad id"]) | st.text(max_size=8),
        "from_step": st.sampled_from(["one", ""]) | st.text(max_size=8),
        "entries": st.lists(
            st.dictionaries(
                st.sampled_from(["op", "kind", "name", "status", "output", "v", "attempt"])
                | st.text(max_size=5),
                json_values,
                max_size=6,
            ),
            max_size=3,
        ),
    }
)
field_values = json_values | restart_specs
body_dicts = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), field_values, max_size=6)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=120).map(str.encode),
    json_values.map(_dumps),
    body_dicts.map(_dumps),
    st.builds(
        lambda name, extra: _dumps({"workflow": name, "execution_id": "fresh", **extra}),
        st.sampled_from(["fuzz-done", "fuzz-wait", "unknown-workflow"]),
        body_dicts,
    ),
    st.builds(lambda extra: _dumps({"type": "go", **extra}), body_dicts),
)
queries = st.dictionaries(
    st.sampled_from(["wait", "x", ""]),
    st.sampled_from(["0", "1", "-1", "nan", "inf", "1e309", "61", "abc", "", "0.5"]) | st.text(max_size=8),
    max_size=2,
)
paths = (
    st.sampled_from(ROUTES)
    | st.sampled_from(["/", "", "/nope", "/a/b/status", "status/"])
    | st.text(max_size=20)
)


# -- the harness ----------------------------------------------------------------------


class Harness:
    """A fresh namespace per example, with objects in known states, on one event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = VirtualClock()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def fresh(self) -> LocalNamespace:
        ns = LocalNamespace(None, self.clock, seed=0)
        client = create_durable_workflow(ns)
        await client.run(fuzz_done, {"n": 1}, execution_id="done")
        await client.run(fuzz_wait, {"n": 2}, execution_id="waiting")
        await ns.idle()
        return ns

    def close(self) -> None:
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending))
        self.loop.close()


def snapshot(ns: LocalNamespace) -> dict[str, Any]:
    return {
        obj: (ns.backend.list(obj, None, None, None, None, False), ns.backend.get_alarm(obj))
        for obj in ns.backend.objects()
    }


def stored(snap: dict[str, Any]) -> dict[str, Any]:
    """The stored records only (an execution's own retry alarm may move meanwhile)."""
    return {obj: kv for obj, (kv, _alarm) in snap.items()}


def check(response: WireResponse, before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    assert response.status < 500, f"{what} -> {response.status} {response.body}"
    if response.status >= 400:
        error = response.body.get("error") if isinstance(response.body, dict) else None
        assert isinstance(error, dict), f"{what} -> {response.body}"
        assert isinstance(error.get("code"), str) and error["code"], f"{what} -> {response.body}"
        assert isinstance(error.get("message"), str) and error["message"], f"{what} -> {response.body}"
        assert after == before, f"{what} was rejected ({response.status}) but changed storage"


async def send(ns: LocalNamespace, name: str, request: WireRequest) -> tuple[WireResponse, dict[str, Any]]:
    before = snapshot(ns)
    response = await ns.fetch(name, request)
    await ns.idle()
    return response, before


@pytest.fixture
def harness() -> Any:
    h = Harness()
    yield h
    h.close()


def _fuzz(harness: Harness) -> Callable[..., None]:
    def one(name: str, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        async def go() -> None:
            ns = await harness.fresh()
            try:
                request = WireRequest(method=method, path=path, query=query, body=body)
                response, before = await send(ns, name, request)
                check(response, before, snapshot(ns), f"{method} {path!r} {query} {body[:200]!r} to {name}")
            finally:
                await ns.close()

        harness.run(go())

    return one


@FUZZ_SETTINGS
@given(
    name=st.sampled_from(OBJECTS),
    method=st.sampled_from(METHODS),
    path=paths,
    query=queries,
    body=bodies,
)
def test_any_request_to_any_route(
    harness: Harness, name: str, method: str, path: str, query: dict[str, str], body: bytes
) -> None:
    _fuzz(harness)(name, method, path, query, body)


@FUZZ_SETTINGS
@given(route=st.sampled_from(ROUTES), name=st.sampled_from(OBJECTS), body=bodies, query=queries)
def test_every_route_with_hostile_bodies(
    harness: Harness, route: str, name: str, body: bytes, query: dict[str, str]
) -> None:
    method = "GET" if route in ("/status", "/journal", "/meta", "/result") and len(body) % 2 else "POST"
    _fuzz(harness)(name, method, route, query, body)


@pytest.mark.parametrize("route", ["/execute", "/event", "/resume", "/cancel"])
@pytest.mark.parametrize(
    "body",
    [
        b"x" * 3_000_000,  # over the request body limit
        b'{"payload": "' + b"y" * 2_400_000 + b'", "type": "go"}',  # under it, over a stored value
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON decoder's recursion limit
        b'{"type": "go", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"type": "go", "payload": ' + b"[" * 900 + b"]" * 900 + b"}",
        b"\xff\xfe\x00",
        b'{"type": "go", "payload": NaN}',
        b'{"type": "go", "payload": 1e999}',
        b'{"workflow": "fuzz-done", "execution_id": "fresh", "input": {"a": Infinity}}',
    ],
    ids=[
        "3MB",
        "2.4MB-value",
        "deep-body",
        "deep-payload",
        "900-deep",
        "bad-utf8",
        "nan",
        "1e999",
        "inf-input",
    ],
)
def test_huge_deep_and_non_json_bodies(harness: Harness, route: str, body: bytes) -> None:
    for name in OBJECTS:
        _fuzz(harness)(name, "POST", route, {}, body)


# -- corrupt and unknown-version journals ------------------------------------------------------


CORRUPTIONS: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "state-v2": lambda r: {"state": json.dumps({**json.loads(r["state"]), "v": 2})},
    "meta-v0": lambda r: {"meta": json.dumps({**json.loads(r["meta"]), "v": 0})},
    "entry-v99": lambda r: {"j:00000000": json.dumps({**json.loads(r["j:00000000"]), "v": 99})},
    "entry-not-json": lambda r: {"j:00000000": "{not json"},
    "entry-array": lambda r: {"j:00000000": "[1, 2]"},
    "entry-deep": lambda r: {"j:00000000": "[" * 50_000 + "]" * 50_000},
    "result-v2": lambda r: {"result": json.dumps({"v": 2, "value": 1})},
}


@pytest.mark.parametrize(
    ("corruption", "name"),
    # Only a completed execution has a result to corrupt.
    [(c, n) for c in sorted(CORRUPTIONS) for n in ("done", "waiting") if (c, n) != ("result-v2", "waiting")],
)
def test_unknown_journal_versions_answer_4xx_and_change_nothing(
    harness: Harness, corruption: str, name: str
) -> None:
    async def go() -> None:
        ns = await harness.fresh()
        try:
            records = ns.backend.list(name, None, None, None, None, False)
            assert corruption != "result-v2" or "result" in records
            ns.backend.commit(name, CORRUPTIONS[corruption](records), (), None)
            ns.evict(name)  # a cold object reads the corrupt record
            for route, method, body in [
                ("/status", "GET", b""),
                ("/journal", "GET", b""),
                ("/meta", "GET", b""),
                ("/result", "GET", b""),
                ("/cancel", "POST", b"{}"),
                ("/event", "POST", b'{"type": "go", "payload": 1}'),
                ("/execute", "POST", json.dumps({"workflow": "fuzz-wait", "execution_id": name}).encode()),
            ]:
                response, before = await send(ns, name, WireRequest(method, route, body=body))
                what = f"{method} {route} to {name} with {corruption}"
                check(response, stored(before), stored(snapshot(ns)), what)
        finally:
            await ns.close()

    harness.run(go())


@FUZZ_SETTINGS
@given(text=st.one_of(st.text(max_size=200), json_values.map(lambda v: json.dumps(v, allow_nan=True))))
def test_the_journal_decoder_returns_a_record_or_raises_journal_format_error(text: str) -> None:
    try:
        record = jn.decode_record("j:00000000", text)
    except JournalFormatError:
        return
    assert isinstance(record, dict) and record["v"] in (jn.VERSION, jn.OP_VERSION)


@pytest.mark.parametrize("text", [None, 1, b"{}", "[" * 100_000, '{"v": 1.0}', '{"v": true}', '{"v": "1"}'])
def test_the_journal_decoder_on_hostile_values(text: Any) -> None:
    try:
        record = jn.decode_record("state", text)
    except JournalFormatError:
        return
    assert record["v"] == jn.VERSION


@pytest.mark.parametrize(
    "entries",
    [
        [{}],
        [{"op": "first"}],
        [{"op": 0, "kind": None, "name": None, "status": None, "output": None, "v": None}],
    ],
    ids=["no-op", "op-not-int", "v-null"],
)
def test_restart_entries_are_validated(harness: Harness, entries: list[dict[str, Any]]) -> None:
    """``/execute`` with a ``restart`` spec copies journal entries given by the caller."""
    body = {
        "workflow": "fuzz-done",
        "execution_id": "fresh",
        "restart": {"execution_id": "done", "from_step": "one", "entries": entries},
    }
    _fuzz(harness)("fresh", "POST", "/execute", {}, _dumps(body))


def _decoding(decode: Callable[[bytes], Any], body: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        return type(exc).__name__, str(exc)


BODY_TEXTS = [
    '{"workflow":"w","input":{"n":1}}',
    '{ "spaced" : [1, 2.5, null] } ',
    '{"lone":"\\ud800","pair":"\\ud83d\\ude00","é":"ü"}',
    '{"nan":NaN,"inf":-Infinity}',
    '{"cut":',
    '{"a":1}{"b":2}',
    "[1,2]",
    " {}",
    "{}",
    "{",
]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-16", "utf-32"])
@pytest.mark.parametrize("text", BODY_TEXTS)
def test_bodies_decode_as_json_loads_decodes_them(text: str, encoding: str) -> None:
    """The object reads a UTF-8 body that opens an object with the package's decoder; every
    body, in any encoding ``json.loads`` reads, decodes to what ``json.loads`` gives (or
    fails with its error and message)."""
    from workkit_workflow.cloudflare._wire import _decoded

    body = text.encode(encoding)
    assert _decoding(_decoded, body) == _decoding(json.loads, body)


@given(st.binary(max_size=24).map(lambda tail: b"{" + tail))
@FUZZ_SETTINGS
def test_any_bytes_after_a_brace_decode_as_json_loads_decodes_them(body: bytes) -> None:
    """Raw bytes (invalid UTF-8, an encoded surrogate, a NUL) after an opening brace."""
    from workkit_workflow.cloudflare._wire import _decoded

    assert _decoding(_decoded, body) == _decoding(json.loads, body)
    surrogate = b'{"s":"\xed\xa0\x80"}'  # a surrogate's UTF-8 bytes: json.loads takes them
    assert _decoding(_decoded, surrogate) == _decoding(json.loads, surrogate)
