"""The phase run with its operations: what workflow and compensation contexts call."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ...definitions._steps import StepContext, StepOptions
from ._child import run_child
from ._run import PhaseRun
from ._set_state import run_set_state
from ._sleep import run_sleep
from ._step import replayed_step, run_step
from ._wait import run_wait


class Phase(PhaseRun):
    """A :class:`PhaseRun` that implements the contexts' ``Operations`` port.

    Each operation takes its position when it is *called* (not when awaited), so
    positions follow call order even under ``asyncio.gather``.
    """

    def step(
        self, name: str, call: Callable[[StepContext], Any], options: StepOptions
    ) -> Coroutine[Any, Any, Any]:
        op = self.allocate()
        return replayed_step(self, op, name, options) or run_step(self, op, name, call, options)

    def sleep(self, name: str, *, until: float | None, duration: float | None) -> Coroutine[Any, Any, None]:
        return run_sleep(self, self.allocate(), name, until, duration)

    def wait(
        self, name: str, event_type: str, *, timeout: float | None, default: Any
    ) -> Coroutine[Any, Any, Any]:
        return run_wait(self, self.allocate(), name, event_type, timeout, default)

    def child(
        self, name: str, workflow: str, input: Any, execution_id: str | None
    ) -> Coroutine[Any, Any, Any]:
        return run_child(self, self.allocate(), name, workflow, input, execution_id)

    def set_state(self, key: str, text: str) -> Coroutine[Any, Any, None]:
        return run_set_state(self, self.allocate(), key, text)
