"""The tests' pydantic stand-in (miniflare/realruntime/standin/pydantic) against the real pydantic.

The real-runtime tier runs ``_wire.py`` unchanged on the stand-in inside workerd, which has no
pydantic. Here, on CPython, the same ``_wire.py`` is loaded twice (real pydantic, stand-in) and
every body of a hand-written corpus and of generated ones must get the same verdict and the
same dump: the stand-in accepts nothing pydantic rejects, and rejects nothing it accepts.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workkit_workflow._wire as real_wire
from workkit_workflow.errors import InvalidRequestError

from _runtime_kit import ROOT

STANDIN = ROOT / "miniflare" / "realruntime" / "standin" / "pydantic" / "__init__.py"


def _load(name: str, path: Any) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered: the stand-in resolves a model's annotations in its module's globals.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standin_wire() -> Iterator[ModuleType]:
    names = ("pydantic_standin_for_tests", "workkit_workflow._wire_on_standin")
    standin = _load(names[0], STANDIN)
    real = sys.modules["pydantic"]
    sys.modules["pydantic"] = standin
    try:
        wire = _load(names[1], inspect.getfile(real_wire))
    finally:
        sys.modules["pydantic"] = real
    assert wire.BaseModel is standin.BaseModel
    try:
        yield wire
    finally:
        for name in names:
            sys.modules.pop(name, None)


def verdict(wire: ModuleType, model_name: str, data: Any) -> tuple[str, Any]:
    try:
        parsed = wire.parse(getattr(wire, model_name), json.dumps(data).encode())
    except InvalidRequestError as exc:
        return "rejected", sorted(p["field"] for p in exc.details.get("problems", [])) or exc.message[:40]
    return "accepted", parsed.model_dump()


ID = "order-1"
ENTRY = {"v": 1, "op": 0, "kind": "step", "name": "a", "status": "completed", "output": {"x": 1}}
CORPUS: list[tuple[str, Any]] = [
    ("ExecuteBody", {"workflow": "w", "execution_id": ID}),
    (
        "ExecuteBody",
        {"workflow": "w", "execution_id": ID, "input": {"a": [1, 2.5, None, True]}, "wait": False},
    ),
    ("ExecuteBody", {"workflow": "", "execution_id": ID}),
    ("ExecuteBody", {"workflow": "w" * 257, "execution_id": ID}),
    ("ExecuteBody", {"workflow": 5, "execution_id": ID}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "wait": "yes"}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "wait": 1}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "extra": 1}),
    ("ExecuteBody", {"workflow": "w"}),
    ("ExecuteBody", {"execution_id": ID}),
    ("ExecuteBody", {"workflow": "w", "execution_id": "-x"}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID + "\n"}),
    ("ExecuteBody", {"workflow": "w", "execution_id": "a" * 200}),
    ("ExecuteBody", {"workflow": "w", "execution_id": "a" * 201}),
    ("ExecuteBody", {"workflow": "w", "execution_id": "a b"}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "restart": None}),
    (
        "ExecuteBody",
        {"workflow": "w", "execution_id": ID, "restart": {"execution_id": "o", "from_step": "b"}},
    ),
    (
        "ExecuteBody",
        {
            "workflow": "w",
            "execution_id": ID,
            "restart": {"execution_id": "o", "from_step": "b", "entries": [ENTRY]},
        },
    ),
    (
        "ExecuteBody",
        {
            "workflow": "w",
            "execution_id": ID,
            "restart": {
                "execution_id": "o",
                "from_step": "b",
                "entries": [{**ENTRY, "attempt": 2, "extra": "kept"}],
            },
        },
    ),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "restart": {"execution_id": "o", "from_step": ""}}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "restart": {"execution_id": "o"}}),
    (
        "ExecuteBody",
        {"workflow": "w", "execution_id": ID, "restart": {"execution_id": "o", "from_step": "b", "x": 1}},
    ),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "restart": []}),
    ("ExecuteBody", {"workflow": "w", "execution_id": ID, "restart": "o"}),
    *[
        (
            "ExecuteBody",
            {
                "workflow": "w",
                "execution_id": ID,
                "restart": {"execution_id": "o", "from_step": "b", "entries": [e]},
            },
        )
        for e in [
            {**ENTRY, "v": 2},
            {**ENTRY, "v": True},
            {**ENTRY, "v": 1.0},
            {**ENTRY, "v": "1"},
            {**ENTRY, "op": -1},
            {**ENTRY, "op": 100_000_000},
            {**ENTRY, "op": 1.0},
            {**ENTRY, "op": True},
            {**ENTRY, "kind": "other"},
            {**ENTRY, "status": "failed"},
            {**ENTRY, "name": ""},
            {**ENTRY, "name": 3},
            {k: v for k, v in ENTRY.items() if k != "output"},
            {k: v for k, v in ENTRY.items() if k != "op"},
            [ENTRY],
        ]
    ],
    (
        "ExecuteBody",
        {
            "workflow": "w",
            "execution_id": ID,
            "restart": {
                "execution_id": "o",
                "from_step": "b",
                "idempotent": [{"idempotency_hash": "h", "output": 1}],
            },
        },
    ),
    (
        "ExecuteBody",
        {
            "workflow": "w",
            "execution_id": ID,
            "restart": {"execution_id": "o", "from_step": "b", "idempotent": [{"name": "a"}]},
        },
    ),
    ("CancelBody", {}),
    ("CancelBody", {"reason": "stop"}),
    ("CancelBody", {"reason": None}),
    ("CancelBody", {"reason": 5}),
    ("CancelBody", {"reason": "r" * 1001}),
    ("CancelBody", {"why": "x"}),
    ("EventBody", {"type": "go"}),
    ("EventBody", {"type": "go", "payload": {"a": 1}, "id": "e1"}),
    ("EventBody", {"type": ""}),
    ("EventBody", {"type": "go", "id": ""}),
    ("EventBody", {"type": "go", "id": 7}),
    ("EventBody", {"payload": 1}),
    ("EventBody", {"type": ["go"]}),
]


@pytest.mark.parametrize(("model", "data"), CORPUS)
def test_same_verdict_as_pydantic(standin_wire: ModuleType, model: str, data: Any) -> None:
    assert verdict(standin_wire, model, data) == verdict(real_wire, model, data)


def test_the_corpus_has_both_verdicts(standin_wire: ModuleType) -> None:
    verdicts = {verdict(real_wire, m, d)[0] for m, d in CORPUS}
    assert verdicts == {"accepted", "rejected"}


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELD_VALUES = st.one_of(
    JSON,
    st.sampled_from(["", "w", "order-1", "-x", "a\n", "go", 1, 0, -1, True, False, 1.0, None]),
)


def _bodies(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from([*fields, "extra"]), FIELD_VALUES, max_size=len(fields) + 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.one_of(
        _bodies(["workflow", "execution_id", "input", "wait", "restart"]).map(lambda b: ("ExecuteBody", b)),
        _bodies(["reason"]).map(lambda b: ("CancelBody", b)),
        _bodies(["type", "payload", "id"]).map(lambda b: ("EventBody", b)),
    )
)
def test_generated_bodies_get_the_same_verdict(standin_wire: ModuleType, case: tuple[str, Any]) -> None:
    model, data = case
    assert verdict(standin_wire, model, data) == verdict(real_wire, model, data)


async def test_without_pydantic_the_object_refuses_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pydantic cannot be imported, POST routes answer dependency_missing and create
    nothing; reads still work."""
    from workkit_workflow._ports import WireRequest
    from workkit_workflow.local import LocalNamespace

    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic -> ImportError
    monkeypatch.delitem(sys.modules, "workkit_workflow._wire")
    monkeypatch.delattr(sys.modules["workkit_workflow"], "_wire", raising=False)
    namespace = LocalNamespace()
    body = json.dumps({"workflow": "anything", "execution_id": "no-pydantic"}).encode()
    for path in ("/execute", "/event", "/cancel"):
        response = await namespace.fetch("no-pydantic", WireRequest("POST", path, body=body))
        assert response.status == 500, response.body
        assert response.body["error"]["code"] == "dependency_missing"
        assert response.body["error"]["dependency"] == "pydantic"
    status = await namespace.fetch("no-pydantic", WireRequest("GET", "/status"))
    assert status.status == 404 and status.body["error"]["code"] == "execution_not_found"
    await namespace.close()
