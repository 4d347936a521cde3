"""What an execution id may be, and the object names the library keeps for itself.

An execution id names a Durable Object of the namespace. The library puts two
objects of its own in that namespace, named with a reserved prefix: a concurrency
key's coordinator (``limit:<workflow>:<key>``, ``engine._limits``) and a schedule's
record (``schedule:<name>``, ``definitions._schedule``). An execution under such a
name would share that object, its storage and its alarm, so no execution id may
start with a reserved prefix.
"""

from __future__ import annotations

import re
from typing import Final

EXECUTION_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$"
"""What an execution id may be: it names a Durable Object and goes into storage keys.
It must also not start with one of :data:`RESERVED_ID_PREFIXES` (see
:func:`reserved_prefix`; a pattern cannot say so for pydantic, whose regex has no
look-ahead)."""

LIMIT_PREFIX: Final = "limit:"
"""The prefix of a concurrency key's coordinator: ``limit:<workflow>:<key>``."""

SCHEDULE_PREFIX: Final = "schedule:"
"""The prefix of a schedule's record: ``schedule:<name>``."""

RESERVED_ID_PREFIXES: Final = (LIMIT_PREFIX, SCHEDULE_PREFIX)
"""The prefixes of the library's own objects, which no execution id may start with."""

_EXECUTION_ID = re.compile(EXECUTION_ID_PATTERN)
"""Used with ``fullmatch``: ``$`` also matches before a final newline."""


def reserved_prefix(name: str) -> str | None:
    """The reserved prefix ``name`` starts with, if any."""
    return next((prefix for prefix in RESERVED_ID_PREFIXES if name.startswith(prefix)), None)


def reserved_problem(execution_id: str) -> str | None:
    """Why ``execution_id`` would name one of the library's own objects (None: it would not)."""
    prefix = reserved_prefix(execution_id)
    if prefix is None:
        return None
    return (
        f"{execution_id!r} starts with {prefix!r}, which is reserved for the library's own objects "
        f"(a concurrency key's coordinator, {LIMIT_PREFIX}<workflow>:<key>; a schedule's record, "
        f"{SCHEDULE_PREFIX}<name>)"
    )


def execution_id_problem(execution_id: object) -> str | None:
    """Why no execution can have ``execution_id`` (None: one can)."""
    if not isinstance(execution_id, str) or not _EXECUTION_ID.fullmatch(execution_id):
        return (
            "execution_id must be 1-200 letters, digits or . _ : - (starting with a letter or "
            f"digit), got {execution_id!r}"
        )
    reserved = reserved_problem(execution_id)
    return None if reserved is None else f"execution_id {reserved}"
