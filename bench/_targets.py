"""The issue's targets, each judged MET or MISSED on the median of interleaved runs and
printed with the spread (min / median / max) it was judged on."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    line: str
    met: bool | None
    """None: not measured in this run (the line says why)."""

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "met": self.met}


def spread_text(values: Sequence[float], unit: float, digits: int, suffix: str) -> str:
    ordered = sorted(values)
    med, low, high = statistics.median(ordered), ordered[0], ordered[-1]
    return (
        f"{med * unit:.{digits}f}{suffix} (min {low * unit:.{digits}f}, max {high * unit:.{digits}f},"
        f" {len(ordered)} runs)"
    )


def at_most(
    what: str, values: Sequence[float], limit: float, *, unit: float = 1.0, digits: int = 2, suffix: str = ""
) -> Verdict:
    """MET if the median of ``values`` is at most ``limit`` (both in base units)."""
    met = statistics.median(values) <= limit
    text = spread_text(values, unit, digits, suffix)
    return Verdict(f"[{'MET' if met else 'MISSED'}] {what}: {text}; target <= {limit * unit:g}{suffix}", met)


def at_least(
    what: str, values: Sequence[float], limit: float, *, unit: float = 1.0, digits: int = 2, suffix: str = ""
) -> Verdict:
    met = statistics.median(values) >= limit
    text = spread_text(values, unit, digits, suffix)
    return Verdict(f"[{'MET' if met else 'MISSED'}] {what}: {text}; target >= {limit * unit:g}{suffix}", met)


def skipped(what: str, reason: str) -> Verdict:
    return Verdict(f"[NOT MEASURED] {what}: {reason}", None)


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Run-by-run ratios of two interleaved series (run i of one against run i of the other)."""
    return [a / b for a, b in zip(top, bottom, strict=True)]
