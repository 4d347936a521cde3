"""Workflow versions: what a version string may be, and which version an execution runs.

A workflow name can be registered in several versions side by side (see
:class:`~workkit_workflow.definitions._workflow.Registry`). An execution records
the version it started with in its ``meta`` and keeps it for its whole life; an
execution stored before versions existed has no ``version`` in its meta and runs
:data:`DEFAULT_VERSION`, the version of a definition that names none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ..errors import DefinitionError

DEFAULT_VERSION: Final = "1"
"""The version of ``Workflow(name)`` without ``version=``, and of executions
started before versions existed."""

VERSION_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
"""A version is a short label: 1-64 letters, digits or ``. _ -``, such as ``"2"``,
``"v2"`` or ``"2026-11-30"``. It is compared as a label, never ordered."""

_VERSION = re.compile(VERSION_PATTERN)


def check_version(version: object, where: str) -> str:
    """``version`` if it is a valid version label, else :class:`DefinitionError`."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise DefinitionError(
            f"{where}: version must be 1-64 letters, digits or . _ - (starting with a letter or "
            f"digit), got {version!r}",
            version=repr(version),
        )
    return version


def version_of(meta: Mapping[str, Any]) -> str:
    """The version an execution runs, from its meta (the default for older executions)."""
    version = meta.get("version")
    return version if isinstance(version, str) and version else DEFAULT_VERSION
