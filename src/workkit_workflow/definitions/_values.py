"""Converting user values to JSON-able data and back into declared types.

Kept free of a hard pydantic import so the engine runs where pydantic cannot
be loaded (the offline Pyodide used in tests): models are duck-typed by their
``model_dump`` / ``model_validate`` methods; other annotated types load
pydantic's ``TypeAdapter`` only when used.
"""

from __future__ import annotations

from typing import Any

from ..errors import SerializationError

JSON_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})
"""The types of plain JSON values (which are also never awaitable): the usual step
output, checked by its exact type before any slower test."""


def to_data(value: Any, *, what: str = "value") -> Any:
    """Turn a step's return value into JSON-able data (pydantic models are dumped).

    A model that cannot be dumped is a SerializationError (final, like any
    value that cannot be stored), whatever the model raised.
    """
    if type(value) in JSON_TYPES:
        return value  # most outputs: no attribute lookup that fails (and raises inside)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return dump(mode="json")
        except Exception as exc:
            raise SerializationError(
                f"{what} ({type(value).__name__}) cannot be dumped to JSON: {exc}",
                what=what,
                type=type(value).__name__,
            ) from None
    return value


def validate(tp: Any, data: Any, *, what: str) -> Any:
    """Validate ``data`` into ``tp`` (a pydantic model or any type pydantic understands)."""
    if tp is None:
        return data
    model_validate = getattr(tp, "model_validate", None)
    try:
        if callable(model_validate):
            return model_validate(data)
        from pydantic import TypeAdapter

        return TypeAdapter(tp).validate_python(data)
    except ImportError:
        raise
    except Exception as exc:
        raise SerializationError(f"{what} does not match {getattr(tp, '__name__', tp)}: {exc}") from None
