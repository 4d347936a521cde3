"""What the SIGKILL workers share: the execution object with a short lease, and the
fsync'd log their steps write to, the outside world that must see each effect once."""

from __future__ import annotations

import os

from workkit_workflow import WorkflowExecutionDO


class QuickLease(WorkflowExecutionDO):  # type: ignore[misc]
    # A short lease: after a kill, the next process resumes within a second.
    lease = 0.5


def drop_torn_tail(path: str) -> None:
    """Cut what a killed writer left of its last line. One ``write`` of a line is not
    atomic under SIGKILL: Linux copies a write page by page and stops at a fatal signal,
    so a line that crosses a page boundary can end half written. Only one process writes
    at a time, so the next one trims it before it appends."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class Log:
    """An append-only line log, each line on disk before ``write`` returns (a line a kill
    tore is cut by the next process's log)."""

    def __init__(self, path: str) -> None:
        drop_torn_tail(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)
