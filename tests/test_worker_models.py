"""The example Worker's request models (worker/app.py, strict pydantic) give the same answer on
the real pydantic and on the tests' stand-in that the real-runtime tiers embed in its place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "worker"))

import app  # noqa: E402

ITEM = {"sku": "book-1", "quantity": 2}
BODIES: list[tuple[str, Any]] = [
    ("order", {"order_id": "o-1", "amount": 25.5, "items": [ITEM]}),
    ("order", {"order_id": "o-1", "amount": 7, "currency": "USD", "items": [{"sku": "a"}]}),
    ("order", {}),
    ("order", {"order_id": "o 1", "amount": "12", "items": []}),
    ("order", {"order_id": "o-1", "amount": True, "items": [ITEM]}),
    ("order", {"order_id": "o-1", "amount": 5, "items": [{"sku": "a", "quantity": 1.0}]}),
    ("order", {"order_id": "o-1", "amount": 5, "items": [{"sku": "a", "color": "red"}]}),
    ("order", {"order_id": "o-1", "amount": 5, "items": [ITEM], "currency": "euro"}),
    ("order", {"order_id": "o-1\n", "amount": 5, "items": [ITEM]}),
    ("approval", {"approved": True, "by": "ana", "event_id": "e-1"}),
    ("approval", {"approved": 1, "by": ""}),
    ("approval", {"approved": "yes", "by": "x", "extra": None}),
    ("cancel", {}),
    ("cancel", {"reason": 5}),
    ("cancel", {"reason": "x" * 501}),
]
PARSERS = {"order": "parse_order", "approval": "parse_approval", "cancel": "parse_cancel"}


def outcome(kind: str, body: Any) -> Any:
    try:
        return {"ok": getattr(app, PARSERS[kind])(body)}
    except app.ApiError as exc:
        return {"status": exc.status, "fields": [p["field"] for p in exc.body["error"]["problems"]]}


def test_the_models_are_pydantic_and_strict() -> None:
    assert issubclass(app.Order, app.BaseModel) and app.Order.model_config["strict"] is True
    assert outcome("order", BODIES[1][1]) == {
        "ok": {"order_id": "o-1", "amount": 7, "currency": "USD", "items": [{"sku": "a", "quantity": 1}]}
    }
    assert outcome("order", BODIES[3][1]) == {"status": 400, "fields": ["order_id", "items"]}
    assert outcome("order", BODIES[4][1]) == {"status": 400, "fields": ["amount"]}


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_the_stand_in_answers_as_pydantic_does(kind: str, body: Any) -> None:
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import pydantic\n"
        "assert 'standin' in pydantic.VERSION, pydantic.VERSION\n"
        "from test_worker_models import outcome\n"
        "print(json.dumps(outcome(*json.loads(sys.argv[1]))))\n"
    )
    path = os.pathsep.join(
        str(p) for p in (ROOT / "miniflare" / "realruntime" / "standin", ROOT / "src", ROOT / "worker")
    )
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps([kind, body])],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == json.loads(json.dumps(outcome(kind, body)))
