"""One owner per SQLite file: an OS advisory lock on a sidecar file.

Two runtimes on one file would both deliver its alarms and run journaled
steps twice, so :class:`~workkit_workflow.local.LocalNamespace` takes an
exclusive ``flock`` on ``<path>.lock`` for as long as it is open. The kernel
drops the lock when the process dies, however it dies (SIGKILL included), so a
crashed owner never leaves the file locked. The lock file also says who owns
the file (pid, and the address a ``workkit-workflow serve`` answers on), so
other processes can go through the owner instead of opening the file.

Readers need no lock: SQLite's WAL lets them read while the owner writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the lock is skipped there
    fcntl = None  # type: ignore[assignment]

ACQUIRE_ATTEMPTS = 10
ACQUIRE_PAUSE = 0.02
"""A process probing who owns the file holds the lock for a moment: retry that long."""


class DatabaseInUseError(RuntimeError):
    """The SQLite file is owned by another open ``LocalNamespace`` (this process or another).

    ``pid`` is the owner's process id and ``address`` the HTTP address it
    answers on (``workkit-workflow serve``), when it published one.
    """

    def __init__(self, path: str, owner: Owner | None) -> None:
        self.path = path
        self.pid = owner.pid if owner else None
        self.address = owner.address if owner else None
        who = f"process {self.pid}" if self.pid is not None else "another process"
        via = f" (serving on {self.address})" if self.address else ""
        super().__init__(
            f"{path!r} is already in use by {who}{via}: one runtime file has one owner; "
            "close the other LocalNamespace or go through it"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, Owner(self.pid, self.address)))


@dataclass(frozen=True)
class Owner:
    """Who holds a runtime file: the process id and, if published, its HTTP address."""

    pid: int | None
    address: str | None = None


def lock_path(path: str) -> str:
    return path + ".lock"


def lockable(path: str | None) -> bool:
    """In-memory databases have nothing to share; on Windows there is no flock."""
    return fcntl is not None and path not in (None, "", ":memory:") and not str(path).startswith("file:")


def _read(handle: IO[str]) -> Owner:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    pid, address = info.get("pid"), info.get("address")
    return Owner(pid if isinstance(pid, int) else None, address if isinstance(address, str) else None)


def _try_lock(handle: IO[str]) -> bool:
    assert fcntl is not None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLock:
    """The held lock of one runtime file; ``release()`` (or process death) frees it."""

    def __init__(self, path: str) -> None:
        self.path = path
        handle = open(lock_path(path), "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        for attempt in range(ACQUIRE_ATTEMPTS):
            if _try_lock(handle):
                break
            if attempt == ACQUIRE_ATTEMPTS - 1:
                owner = _read(handle)
                handle.close()
                raise DatabaseInUseError(path, owner)
            time.sleep(ACQUIRE_PAUSE)
        self._handle: IO[str] | None = handle
        self._write(Owner(os.getpid()))

    def _write(self, owner: Owner) -> None:
        assert self._handle is not None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": owner.pid, "address": owner.address}))
        self._handle.flush()

    def advertise(self, address: str | None) -> None:
        """Publish the address other processes reach this owner at."""
        if self._handle is not None:
            self._write(Owner(os.getpid(), address))

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            handle.truncate(0)
        handle.close()  # closing the descriptor drops the flock


def current_owner(path: str) -> Owner | None:
    """Who owns the runtime file at ``path`` now, or None when nobody does."""
    if not lockable(path) or not os.path.exists(lock_path(path)):
        return None
    try:
        handle = open(lock_path(path), encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        if _try_lock(handle):
            return None  # closing the handle drops the probe's lock
        for _ in range(ACQUIRE_ATTEMPTS):
            owner = _read(handle)
            if owner.pid is not None:
                return owner
            # The owner took the lock and is writing its pid right now.
            time.sleep(ACQUIRE_PAUSE)
        return owner
