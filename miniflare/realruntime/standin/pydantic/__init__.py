"""A test stand-in for the part of pydantic v2 that ``workkit_workflow._wire`` uses.

The real runtime kit has no pydantic (its compiled core has no Pyodide build in the registries;
on Cloudflare, pywrangler vendors the real one). The real-runtime tests embed this module as
``pydantic`` so that ``_wire.py`` runs unchanged inside the Durable Object. It is owned by the
tests, never shipped, and it must never accept what pydantic rejects: it implements strict mode
only, refuses at class creation any annotation or setting it does not implement (instead of
validating it loosely), and ``tests/test_realruntime_standin.py`` checks it against the real
pydantic on the same bodies.

Implemented: ``BaseModel`` (``model_validate``, ``model_dump``, ``model_config`` with
``strict=True`` and ``extra`` forbid/allow/ignore), ``Field`` (``default``, ``default_factory``,
``min_length``, ``max_length``, ``pattern``, ``ge``, ``gt``, ``le``, ``lt``), ``ConfigDict``,
``JsonValue``, ``ValidationError`` (``errors()``). Types: ``str``, ``int``, ``bool``,
``None``, ``Any``, ``JsonValue``, ``Literal[...]``, ``X | None``, ``list[X]`` and models.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

VERSION = "2.0.0+workkit-test-standin"
_MISSING: Any = object()


def ConfigDict(**settings: Any) -> dict[str, Any]:
    return dict(settings)


class FieldInfo:
    def __init__(self, default: Any = _MISSING, default_factory: Any = None, **constraints: Any) -> None:
        known = {"min_length", "max_length", "pattern", "ge", "gt", "le", "lt"}
        unknown = set(constraints) - known
        if unknown:
            raise TypeError(f"pydantic stand-in: Field({', '.join(sorted(unknown))}=...) is not implemented")
        self.default = default
        self.default_factory = default_factory
        self.constraints = constraints


def Field(default: Any = _MISSING, *, default_factory: Any = None, **constraints: Any) -> Any:
    return FieldInfo(default, default_factory, **constraints)


class JsonValue:
    """Marker: any JSON value (dicts with string keys, lists, str, int, float, bool, None)."""


class ValidationError(ValueError):
    def __init__(self, title: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} validation error(s) for {title}")
        self._problems = problems

    def errors(self, *, include_url: bool = True, include_input: bool = True) -> list[dict[str, Any]]:
        return [dict(p) for p in self._problems]


class _Invalid(Exception):
    def __init__(self, kind: str, msg: str, loc: tuple[Any, ...] = ()) -> None:
        super().__init__(msg)
        self.problems = [{"type": kind, "loc": loc, "msg": msg}]


def _at(loc: Any, exc: _Invalid) -> _Invalid:
    for problem in exc.problems:
        problem["loc"] = (loc, *problem["loc"])
    return exc


def _check_json(value: Any) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            try:
                _check_json(item)
            except _Invalid as exc:
                raise _at(i, exc) from None
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid("json_type", "Keys should be strings")
            try:
                _check_json(item)
            except _Invalid as exc:
                raise _at(key, exc) from None
        return
    raise _Invalid("json_type", "Input should be a valid JSON value")


def _validate(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is JsonValue:
        _check_json(value)
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            raise _Invalid("none_required", "Input should be None")
        return None
    if tp is str:
        if type(value) is not str:
            raise _Invalid("string_type", "Input should be a valid string")
        return value
    if tp is bool:
        if type(value) is not bool:
            raise _Invalid("bool_type", "Input should be a valid boolean")
        return value
    if tp is int:
        if type(value) is not int:
            raise _Invalid("int_type", "Input should be a valid integer")
        return value
    if origin is typing.Literal:
        for expected in typing.get_args(tp):
            # pydantic compares literals by equality and hash (True and 1.0 match 1).
            if type(value) in (int, float, bool, str) and value == expected and hash(value) == hash(expected):
                return expected
        allowed = " or ".join(repr(e) for e in typing.get_args(tp))
        raise _Invalid("literal_error", f"Input should be {allowed}")
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        others = [m for m in members if m is not type(None)]
        if len(others) != 1 or len(members) != 2:
            raise TypeError(f"pydantic stand-in: only X | None unions are implemented, not {tp}")
        return None if value is None else _validate(others[0], value)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if type(value) is not list:
            raise _Invalid("list_type", "Input should be a valid list")
        out = []
        problems: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            try:
                out.append(_validate(item_type, item))
            except _Invalid as exc:
                problems.extend(_at(i, exc).problems)
        if problems:
            error = _Invalid("", "")
            error.problems = problems
            raise error
        return out
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if isinstance(value, tp):
            return value
        if type(value) is not dict:
            raise _Invalid("model_type", f"Input should be a valid dictionary or instance of {tp.__name__}")
        return tp._build(value)
    raise TypeError(f"pydantic stand-in: the annotation {tp!r} is not implemented")


_BOUNDS = {
    "ge": ("greater_than_equal", "greater than or equal to", lambda v, b: v >= b),
    "gt": ("greater_than", "greater than", lambda v, b: v > b),
    "le": ("less_than_equal", "less than or equal to", lambda v, b: v <= b),
    "lt": ("less_than", "less than", lambda v, b: v < b),
}


def _constrain(info: FieldInfo, value: Any) -> None:
    c = info.constraints
    if value is None:
        return
    if "min_length" in c and len(value) < c["min_length"]:
        raise _Invalid("too_short", f"Value should have at least {c['min_length']} items")
    if "max_length" in c and len(value) > c["max_length"]:
        raise _Invalid("too_long", f"Value should have at most {c['max_length']} items")
    if "pattern" in c and not _matches(c["pattern"], value):
        raise _Invalid("string_pattern_mismatch", f"String should match pattern '{c['pattern']}'")
    for key, (kind, words, ok) in _BOUNDS.items():
        if key in c and not ok(value, c[key]):
            raise _Invalid(kind, f"Input should be {words} {c[key]}")


def _matches(pattern: str, value: str) -> bool:
    # pydantic-core matches with Rust's regex, where ``$`` is the very end of the text;
    # Python's ``$`` also matches before a final newline, so use ``\Z`` for it.
    if re.search(pattern, value) is None:
        return False
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return re.search(pattern[:-1] + r"\Z", value) is not None
    return True


class BaseModel:
    # Not annotated: annotations are the fields of subclasses only.
    model_config = {}  # noqa: RUF012
    _fields = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.model_config
        if set(config) - {"extra", "strict"}:
            raise TypeError(f"pydantic stand-in: model_config {sorted(set(config))} is not implemented")
        if config.get("strict") is not True:
            raise TypeError("pydantic stand-in: only strict=True models are implemented")
        if config.get("extra", "ignore") not in ("forbid", "allow", "ignore"):
            raise TypeError(f"pydantic stand-in: extra={config['extra']!r}")
        cls._fields = None  # resolved on first use: annotations may name later classes

    @classmethod
    def _schema(cls) -> dict[str, tuple[Any, FieldInfo]]:
        if cls.__dict__.get("_fields") is None:
            hints = typing.get_type_hints(cls)
            fields: dict[str, tuple[Any, FieldInfo]] = {}
            for name, tp in hints.items():
                if name.startswith("_") or name.startswith("model_"):
                    continue
                default = getattr(cls, name, _MISSING)
                info = default if isinstance(default, FieldInfo) else FieldInfo(default)
                fields[name] = (tp, info)
            cls._fields = fields
        return cls.__dict__["_fields"]  # type: ignore[no-any-return]

    @classmethod
    def _build(cls, data: dict[str, Any]) -> Any:
        fields = cls._schema()
        extra = cls.model_config.get("extra", "ignore")
        problems: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        for name, (tp, info) in fields.items():
            if name not in data:
                if info.default_factory is not None:
                    values[name] = info.default_factory()
                elif info.default is not _MISSING:
                    values[name] = info.default
                else:
                    problems.append({"type": "missing", "loc": (name,), "msg": "Field required"})
                continue
            try:
                values[name] = _validate(tp, data[name])
                _constrain(info, values[name])
            except _Invalid as exc:
                problems.extend(_at(name, exc).problems)
        extras = {k: v for k, v in data.items() if k not in fields}
        if extras and extra == "forbid":
            problems.extend(
                {"type": "extra_forbidden", "loc": (k,), "msg": "Extra inputs are not permitted"}
                for k in extras
            )
        if problems:
            error = _Invalid("", "")
            error.problems = problems
            raise error
        instance = cls.__new__(cls)
        instance.__dict__.update(values)
        instance.__dict__["__extra__"] = extras if extra == "allow" else {}
        return instance

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        try:
            return _validate(cls, data)
        except _Invalid as exc:
            raise ValidationError(cls.__name__, exc.problems) from None

    def model_dump(self) -> dict[str, Any]:
        out = {name: _dump(self.__dict__[name]) for name in type(self)._schema()}
        out.update(self.__dict__["__extra__"])
        return out


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value
