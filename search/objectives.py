"""Objectives, constraints and budgets as batched callables over configs.

A `Metric` wraps any `Callable[[Sequence[config]], array]` (a fitted predictor's `predict`, a
table look-up, an analytic count) with a direction: accuracy up; latency, power, energy,
MACs and parameters down. The engine calls it once per generation on the whole batch.

A `Constraint` bounds one metric (`<= limit` for a metric to minimise, `>= limit` for one to
maximise). A `Budget` is a named set of constraints that per-budget selection answers,
e.g. `Budget.of("fast", latency=5.0, power=10.0)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa.space import MBV3Space

MAXIMIZE, MINIMIZE = "maximize", "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)

# Directions and units of the metrics this project knows by name.
KNOWN_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": (MAXIMIZE, "%"),
    "latency": (MINIMIZE, "ms"),
    "power": (MINIMIZE, "W"),
    "energy": (MINIMIZE, "mJ"),
    "macs": (MINIMIZE, "MACs"),
    "params": (MINIMIZE, "params"),
}

BatchFn = Callable[[Sequence[Any]], Any]


def unit_suffix(name: str, unit: str | None) -> str:
    """' ms' after a value, nothing when the unit only repeats the name (macs: MACs)."""
    return f" {unit}" if unit and unit.lower() != name.lower() else ""


def fmt_value(value: float) -> str:
    """Short human form: 4 significant digits, thousands separators, M above a million."""
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.4g}M"
    if a >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Metric:
    """A named batched function of configs with a direction (see `KNOWN_METRICS`)."""

    name: str
    fn: BatchFn = field(compare=False)
    direction: str | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a metric needs a name, got {self.name!r}")
        if not callable(self.fn):
            raise ValueError(f"metric {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        known = KNOWN_METRICS.get(self.name.split(":")[0].split("_")[0].lower())
        direction = self.direction or (known[0] if known else None)
        if direction not in DIRECTIONS:
            raise ValueError(
                f"metric {self.name!r}: direction {self.direction!r} is not allowed; allowed: {', '.join(DIRECTIONS)}"
                + ("" if self.direction else f" (only {', '.join(KNOWN_METRICS)} have a default)")
            )
        object.__setattr__(self, "direction", direction)
        if self.unit is None:
            object.__setattr__(self, "unit", known[1] if known else "")

    @property
    def sign(self) -> float:
        """+1 for a metric to maximise, -1 to minimise: `sign * value` is 'higher is better'."""
        return 1.0 if self.direction == MAXIMIZE else -1.0

    def __call__(self, configs: Sequence[Any]) -> np.ndarray:
        values = np.asarray(self.fn(list(configs)), dtype=np.float64).reshape(-1)
        if values.shape[0] != len(configs):
            raise ValueError(f"metric {self.name!r} returned {values.shape[0]} values for {len(configs)} configs")
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"metric {self.name!r} returned {values[i]} for {configs[i]}; values must be finite")
        return values


def metric(name: str, fn: BatchFn, direction: str | None = None, unit: str | None = None) -> Metric:
    return Metric(name, fn, direction, unit)


def from_predictor(name: str, predictor: Any, direction: str | None = None, unit: str | None = None) -> Metric:
    """A metric from anything with `predict(configs) -> array` (the predictors of `ofa-fit`)."""
    if not callable(getattr(predictor, "predict", None)):
        raise ValueError(f"metric {name!r}: {type(predictor).__name__} has no predict(configs) method")
    return Metric(name, predictor.predict, direction, unit)


def mbv3_macs(space: MBV3Space, name: str = "macs") -> Metric:
    """Analytic MACs of OFA-MobileNetV3 sub-networks of `space`."""
    from ofa.networks import count_macs

    return Metric(name, lambda archs: [count_macs(space, a) for a in archs], MINIMIZE, "MACs")


def mbv3_params(space: MBV3Space, name: str = "params", direction: str = MINIMIZE) -> Metric:
    """Analytic parameter count of OFA-MobileNetV3 sub-networks of `space`."""
    from ofa.networks import count_params

    return Metric(name, lambda archs: [count_params(space, a) for a in archs], direction, "params")


def table_metric(
    name: str, table: Mapping[str, float], key: Callable[[Any], str] = str, direction: str | None = None
) -> Metric:
    """Look configs up in `table` (key -> value); a config missing from it is a clear error."""

    def lookup(configs: Sequence[Any]) -> list[float]:
        out = []
        for c in configs:
            k = key(c)
            if k not in table:
                raise ValueError(f"metric {name!r}: {k!r} is not in the table ({len(table)} rows)")
            out.append(table[k])
        return out

    return Metric(name, lookup, direction)


@dataclass(frozen=True)
class Constraint:
    """`metric <= limit` for a metric to minimise, `metric >= limit` for one to maximise.

    `metric` names an objective or another metric; pass a `Metric` to have one evaluated
    that is not an objective (e.g. a MACs cap on an accuracy/latency search).
    """

    metric: str | Metric
    limit: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int | float) or not math.isfinite(self.limit):
            raise ValueError(f"limit of {self.name!r} = {self.limit!r} must be a finite number")

    @property
    def name(self) -> str:
        return self.metric.name if isinstance(self.metric, Metric) else str(self.metric)

    def violation(self, values: np.ndarray, direction: str) -> np.ndarray:
        """Relative violation (> 0 infeasible, <= 0 feasible), comparable across metrics."""
        scale = abs(self.limit) or 1.0
        v = np.asarray(values, dtype=np.float64)
        return (v - self.limit) / scale if direction == MINIMIZE else (self.limit - v) / scale

    def describe(self, direction: str, unit: str = "") -> str:
        op = "<=" if direction == MINIMIZE else ">="
        return f"{self.name} {op} {fmt_value(self.limit)}{unit_suffix(self.name, unit)}"


@dataclass(frozen=True)
class Budget:
    """A named set of constraints answered by per-budget selection."""

    name: str
    constraints: tuple[Constraint, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if not self.constraints:
            raise ValueError(f"budget {self.name!r} has no limits")

    @classmethod
    def of(cls, name: str, **limits: float) -> Budget:
        """`Budget.of("1ms", latency=1.0, power=5.0)`."""
        return cls(name, tuple(Constraint(k, v) for k, v in limits.items()))

    @classmethod
    def from_dict(cls, name: str, limits: Mapping[str, float]) -> Budget:
        if not isinstance(limits, Mapping) or not limits:
            raise ValueError(f"budget {name!r} must map metric names to limits, got {limits!r}")
        return cls(name, tuple(Constraint(str(k), float(v)) for k, v in limits.items()))

    def limits(self) -> dict[str, float]:
        return {c.name: c.limit for c in self.constraints}


def collect_metrics(
    objectives: Sequence[Metric], constraints: Sequence[Constraint], budgets: Sequence[Budget] = ()
) -> dict[str, Metric]:
    """Every metric the search evaluates, by name: the objectives, then constraint metrics.

    Refuses duplicate names and constraints or budgets on metrics nobody evaluates."""
    if not objectives:
        raise ValueError("at least one objective is needed")
    metrics: dict[str, Metric] = {}
    for m in objectives:
        if not isinstance(m, Metric):
            raise ValueError(f"objectives must be search.Metric objects, got {type(m).__name__}")
        if m.name in metrics:
            raise ValueError(f"objective {m.name!r} is given twice")
        metrics[m.name] = m
    for c in constraints:
        if not isinstance(c, Constraint):
            raise ValueError(f"constraints must be search.Constraint objects, got {type(c).__name__}")
        if isinstance(c.metric, Metric):
            if c.metric.name in metrics and metrics[c.metric.name].fn is not c.metric.fn:
                raise ValueError(f"two different metrics are named {c.metric.name!r}")
            metrics.setdefault(c.metric.name, c.metric)
    for c in [*constraints, *(c for b in budgets for c in b.constraints)]:
        if c.name not in metrics:
            raise ValueError(f"constraint on {c.name!r}: no such metric; evaluated metrics: {', '.join(metrics)}")
    return metrics
