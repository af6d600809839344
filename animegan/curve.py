"""A run's quality curve against its training hours: the best evaluated step, and whether the curve
has gone flat (no gain over the last N hours), the campaigns' rule for when to stop.

    curve = read_curve(RunFolder("runs/scenery").metrics(), "kid")
    curve.best, curve.hours, curve.hours_since_best, curve.flat(2.0)

Hours are training hours, read from metrics.jsonl: the trainers log ``train_hours`` (their own
count, carried across resumes) in each record; for records without it (runs logged before it
existed) the time between consecutive records counts, except a gap longer than ``MAX_GAP_S``, which
is a stop. Steps redone after a resume are counted once, as the trainers truncate the metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

MAX_GAP_S = 900.0  # longer between two records without train_hours: the run was stopped meanwhile


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation: the step, the training hours up to it, and the metric's value."""

    step: int
    hours: float
    value: float


@dataclass(frozen=True)
class Curve:
    """The evaluations of one metric (lower is better) and the run's training hours."""

    metric: str
    points: tuple[CurvePoint, ...]
    hours: float  # up to the newest record, evaluated or not

    @property
    def best(self) -> CurvePoint | None:
        """The lowest value (the earliest such step on a tie); None before any evaluation."""
        return min(self.points, key=lambda p: (p.value, p.step)) if self.points else None

    @property
    def hours_since_best(self) -> float:
        best = self.best
        return max(0.0, self.hours - best.hours) if best else 0.0

    def flat(self, window_hours: float, min_hours: float = 0.0) -> bool:
        """No gain over the last ``window_hours`` of training, after at least ``min_hours`` in all."""
        return self.best is not None and self.hours >= min_hours and self.hours_since_best >= window_hours

    def summary(self) -> str:
        """One line: the best step and how long the run has trained since."""
        best = self.best
        if best is None:
            return f"{self.hours:.2f} h trained, no {self.metric} yet"
        return (f"best {self.metric} {best.value:.4g} at step {best.step:,} ({best.hours:.2f} h); "
                f"{self.hours:.2f} h trained, {self.hours_since_best:.2f} h since the best")


def training_hours(records: Sequence[dict[str, Any]]) -> list[float]:
    """The training hours up to each record (see the module's docstring)."""
    hours: list[float] = []
    total = 0.0
    previous: dict[str, Any] | None = None
    for r in records:
        if previous is not None:
            logged, before = finite_number(r.get("train_hours")), finite_number(previous.get("train_hours"))
            if logged is not None and before is not None and logged >= before:
                total += logged - before
            else:
                gap = (finite_number(r.get("time")) or 0.0) - (finite_number(previous.get("time")) or 0.0)
                if 0.0 < gap <= MAX_GAP_S:
                    total += gap / 3600.0
        elif finite_number(r.get("train_hours")) is not None:
            total = float(r["train_hours"])
        hours.append(total)
        previous = r
    return hours


def read_curve(records: Sequence[dict[str, Any]], metric: str) -> Curve:
    """``metric``'s evaluations in ``records`` (metrics.jsonl lines) with their training hours."""
    hours = training_hours(records)
    points = tuple(CurvePoint(int(r["step"]), h, float(r[metric])) for r, h in zip(records, hours)
                   if finite_number(r.get(metric)) is not None)
    return Curve(metric, points, hours[-1] if hours else 0.0)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when a metrics line holds a finite number there (bools are not), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
