"""What a search returns: its evaluations, the feasible Pareto front, and per-budget choices.

Per budget, the best evaluated arch that meets it: best in the first objective (the
predicted accuracy), ties broken by the next objectives in order (lower latency). A budget
nothing meets gets no arch and a message naming the closest arch (smallest relative excess
over the limits) and its figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.genes import GeneSpace
from search.objectives import Budget, Constraint, Metric, fmt_value, unit_suffix


@dataclass(frozen=True)
class Evaluation:
    """One distinct config and its metrics (`feasible`: meets the run's constraints)."""

    config: Any
    key: str
    values: dict[str, float]
    feasible: bool
    trial: int


@dataclass(frozen=True)
class BudgetChoice:
    budget: Budget
    evaluation: Evaluation | None  # the chosen arch, None when nothing meets the budget
    closest: Evaluation | None  # when nothing meets it: the arch closest to its limits
    message: str

    @property
    def ok(self) -> bool:
        return self.evaluation is not None


@dataclass
class SearchResult:
    """The feasible Pareto front and every evaluation of one search (a study)."""

    space: GeneSpace
    objectives: tuple[Metric, ...]
    constraints: tuple[Constraint, ...]
    evaluations: list[Evaluation]
    front: list[Evaluation]
    n_trials: int  # Optuna trials, repeats answered from the cache included
    study_name: str
    sampler: str
    stopped: str
    metrics: dict[str, Metric] = field(default_factory=dict)

    @property
    def n_evaluations(self) -> int:
        return len(self.evaluations)

    def select(self, budgets: Sequence[Budget]) -> list[BudgetChoice]:
        """One `BudgetChoice` per budget, in order (see `choose`)."""
        return choose(self.evaluations, budgets, self.objectives, self.metrics, self.constraints)

    def rows(self, evaluations: Sequence[Evaluation] | None = None) -> list[dict[str, Any]]:
        """Table rows (`arch`, metrics, `feasible`, `trial`) for CSV output."""
        evs = self.evaluations if evaluations is None else evaluations
        return [{"arch": e.key, **e.values, "feasible": e.feasible, "trial": e.trial} for e in evs]


def describe_limits(budget: Budget, metrics: Mapping[str, Metric]) -> str:
    return ", ".join(c.describe(metrics[c.name].direction, metrics[c.name].unit) for c in budget.constraints)


def figures(e: Evaluation, metrics: Mapping[str, Metric]) -> str:
    return ", ".join(f"{n} {fmt_value(e.values[n])}{unit_suffix(n, m.unit)}" for n, m in metrics.items())


def _excess(e: Evaluation, c: Constraint, metrics: Mapping[str, Metric]) -> float:
    return float(c.violation(np.array([e.values[c.name]]), metrics[c.name].direction)[0])


def _violation(e: Evaluation, limits: Sequence[Constraint], metrics: Mapping[str, Metric]) -> float:
    return float(sum(max(0.0, _excess(e, c, metrics)) for c in limits))


def choose(
    evaluations: Sequence[Evaluation],
    budgets: Sequence[Budget],
    objectives: Sequence[Metric],
    metrics: Mapping[str, Metric],
    constraints: Sequence[Constraint] = (),
) -> list[BudgetChoice]:
    """One `BudgetChoice` per budget, in order; an unmet budget is a choice without an arch."""
    choices = []
    for b in budgets:
        if not isinstance(b, Budget):
            raise ValueError(f"budgets must be search.Budget objects, got {type(b).__name__}")
        for c in b.constraints:
            if c.name not in metrics:
                raise ValueError(f"budget {b.name!r} limits {c.name!r}; evaluated metrics: {', '.join(metrics)}")
        choices.append(_choose_one(evaluations, b, objectives, metrics, [*b.constraints, *constraints]))
    return choices


def _choose_one(
    evaluations: Sequence[Evaluation],
    budget: Budget,
    objectives: Sequence[Metric],
    metrics: Mapping[str, Metric],
    limits: Sequence[Constraint],
) -> BudgetChoice:
    head = f"budget {budget.name!r} ({describe_limits(budget, metrics)})"
    feasible = [e for e in evaluations if _violation(e, limits, metrics) <= 0]
    if feasible:
        best = min(feasible, key=lambda e: tuple(-m.sign * e.values[m.name] for m in objectives))
        return BudgetChoice(budget, best, None, f"{head}: {best.key} — {figures(best, metrics)}")
    if not evaluations:
        return BudgetChoice(budget, None, None, f"{head}: nothing was evaluated, so no arch can be named")
    primary = objectives[0]
    closest = min(evaluations, key=lambda e: (_violation(e, limits, metrics), -primary.sign * e.values[primary.name]))
    excess = ", ".join(
        f"{c.name} {fmt_value(closest.values[c.name])} vs limit {fmt_value(c.limit)} "
        f"({100 * _excess(closest, c, metrics):+.0f}%)"
        for c in limits
        if _excess(closest, c, metrics) > 0
    )
    msg = (
        f"{head}: none of the {len(evaluations)} evaluated archs meets it; "
        f"closest: {closest.key} with {excess}; {figures(closest, metrics)}"
    )
    return BudgetChoice(budget, None, closest, msg)
