"""What the SIGKILL workers share: the execution object with a short lease, and the
fsync'd log their steps write to, the outside world that must see each effect once."""

from __future__ import annotations

import os

from workkit_workflow import WorkflowExecutionDO


class QuickLease(WorkflowExecutionDO):  # type: ignore[misc]
    # A short lease: after a kill, the next process resumes within a second.
    lease = 0.5


class Log:
    """An append-only line log, each line on disk before ``write`` returns."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)
