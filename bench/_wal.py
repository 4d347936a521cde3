"""A SQLite file's write-ahead log, read from SQLite's own wal-index: exact counts, no estimates.

Every connection to a WAL database shares the wal-index, the ``-shm`` file next to it
(memory-mapped, in the machine's byte order but for the salt). Its header (``WalIndexHdr``
in SQLite's ``wal.c``, stable since 3.7.0: ``iVersion`` 3007000) holds the frames now in the log
(``mxFrame``; a frame is one page) and the log's salt: ``aSalt[0]`` grows by one each time
a writer restarts the log from its first frame, which SQLite does only after a checkpoint
copied the whole log into the database. The checkpoint info after the header's two copies
(``WalCkptInfo``) holds the frames checkpointed so far (``nBackfill``).

Two readings give two counts:

* frames written between them: the growth of ``mxFrame`` if the log did not restart, or the
  new log's ``mxFrame`` if it restarted once (the frames before the restart were all counted
  by the previous reading). :class:`FrameCounter` reads the header at the start of every
  statement of one connection (its trace callback) and once at the end, so between two
  readings at most one transaction commits and the log restarts at most once: the count is
  exact. It costs a read per statement, so it runs in an untimed pass of its own.
* checkpoints between them, however far apart: each restart closes a log that one
  checkpoint copied whole, plus one if the log at the second reading was checkpointed
  (``nBackfill`` > 0, not restarted yet), less one if the log at the first was. Exact when
  every checkpoint copies the whole log (no other connection reads an older snapshot), as
  for the bench's own files: one connection each. (A peer's file, written by its own pool
  of connections, is counted the same way; if its readers cut a checkpoint short, the
  checkpoints that retry the same log are not counted.) :func:`checkpoints` costs two
  reads, so it brackets every timed run.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("=I4xI2xHI")
"""``iVersion``, (unused), ``iChange``, (isInit, bigEndCksum), ``szPage``, ``mxFrame``."""
_SALT_AT = 32
_BACKFILL_AT = 96
_VERSION = 3007000
_RESTARTS_BOUND = 1 << 20
"""More restarts than this between two readings means the salt was drawn anew (a writer's
first log after another connection truncated it), not counted up: refused."""


@dataclass(frozen=True)
class WalState:
    frames: int
    """Frames in the log now (``mxFrame``)."""
    salt: int
    """``aSalt[0]``: one more at each restart of the log."""
    backfilled: int
    """Frames of this log already copied into the database (``nBackfill``)."""
    page_size: int


EMPTY = WalState(0, 0, 0, 0)


def read(path: str) -> WalState:
    """The wal-index of the database at ``path`` now (:data:`EMPTY` before it has one)."""
    try:
        with open(path + "-shm", "rb") as f:
            raw = f.read(_BACKFILL_AT + 4)
    except FileNotFoundError:
        return EMPTY
    if len(raw) < _BACKFILL_AT + 4:
        return EMPTY
    version, _change, page_size, frames = _HEADER.unpack_from(raw)
    if version != _VERSION:
        raise RuntimeError(f"{path}-shm: wal-index version {version}, expected {_VERSION}")
    # The salt is a big-endian number in every byte order (SQLite counts it up with sqlite3Put4byte).
    (salt,) = struct.unpack_from(">I", raw, _SALT_AT)
    (backfilled,) = struct.unpack_from("=I", raw, _BACKFILL_AT)
    # SQLite stores a page size of 65,536 as 1 (it does not fit the u16).
    return WalState(frames, salt, backfilled, 65536 if page_size == 1 else page_size)


def restarts(before: WalState, after: WalState) -> int:
    count = (after.salt - before.salt) % 2**32
    if count > _RESTARTS_BOUND:
        raise RuntimeError(f"the log's salt went from {before.salt} to {after.salt}: restarts not countable")
    return count


def frames_between(before: WalState, after: WalState) -> int:
    """Frames written between two readings with at most one restart between them."""
    count = restarts(before, after)
    if count == 0:
        return after.frames - before.frames
    if count == 1:
        return after.frames
    raise RuntimeError(f"{count} restarts of the log between two readings: frames not countable")


def checkpoints(before: WalState, after: WalState) -> int:
    """Checkpoints between two readings (see the module docstring for when it is exact)."""
    return restarts(before, after) + (after.backfilled > 0) - (before.backfilled > 0)


class FrameCounter:
    """Frames one connection writes to its log, counted exactly (an untimed pass).

    Readings at the start of each of the connection's statements and at :meth:`stop`; a
    statement is at most one transaction, so two readings bracket at most one commit."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self.path = path
        self.frames = 0
        self.checkpoints = 0
        self._connection = connection
        self._last = read(path)
        connection.set_trace_callback(self._statement)

    def _statement(self, _sql: str) -> None:
        self._take(read(self.path))

    def _take(self, now: WalState) -> None:
        self.frames += frames_between(self._last, now)
        self.checkpoints += checkpoints(self._last, now)
        self._last = now

    def stop(self) -> None:
        self._connection.set_trace_callback(None)
        self._take(read(self.path))


def restart(connection: sqlite3.Connection) -> None:
    """Checkpoint the whole log into the database, so the next write starts the log again
    from its first frame (the salt counted up), on the writer's own connection. The file
    keeps its size: the next run overwrites its frames, as a long-running database does
    after each checkpoint. (Truncating it instead made every commit at FULL about a quarter
    slower, each sync also writing the file's new size: not what an application pays.)"""
    busy, _log, _done = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    if busy:
        raise RuntimeError("PRAGMA wal_checkpoint(RESTART) was blocked by another connection")


def file_path(connection: sqlite3.Connection) -> str:
    """The file of a connection's main database."""
    for _seq, name, path in connection.execute("PRAGMA database_list"):
        if name == "main":
            return str(path)
    raise RuntimeError("no main database")
