"""Crash injection: the engine's named fault points and a plan of which ones crash."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAULT_POINTS = (
    "before_step",
    "after_side_effect",
    "after_journal",
    "in_compensation",
    "in_alarm",
    "in_history",
    "in_mail",
    "after_incarnation",
)


@dataclass
class _Rule:
    point: str
    step: str | None
    attempt: int | None
    execution_id: str | None
    remaining: int
    when: Callable[[Mapping[str, Any]], bool] | None


@dataclass
class FaultPlan:
    """Which fault points crash the object, and a record of every crash."""

    rules: list[_Rule] = field(default_factory=list)
    crashes: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)

    def crash_at(
        self,
        point: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        execution_id: str | None = None,
        times: int = 1,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> FaultPlan:
        """Crash (evict the object, kill its tasks) the next ``times`` times ``point`` is hit."""
        if point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(FAULT_POINTS)}")
        self.rules.append(_Rule(point, step, attempt, execution_id, times, when))
        return self

    def clear(self) -> None:
        self.rules.clear()

    def __call__(self, obj: str | None, point: str, info: Mapping[str, Any]) -> bool:
        for rule in self.rules:
            if rule.remaining <= 0 or rule.point != point:
                continue
            if rule.step is not None and info.get("step") != rule.step:
                continue
            if rule.attempt is not None and info.get("attempt") != rule.attempt:
                continue
            if rule.execution_id is not None and obj != rule.execution_id:
                continue
            if rule.when is not None and not rule.when(info):
                continue
            rule.remaining -= 1
            self.crashes.append((obj, point, dict(info)))
            return True
        return False
