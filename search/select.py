"""Per-budget selection: for each budget, the best evaluated arch that meets it.

Best means best in the first objective (the predicted accuracy), ties broken by the next
objectives in order (lower latency). A budget nothing meets gets no arch and a message
naming the closest arch (smallest relative excess over the limits) and its figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rich.table import Table

from ofa.errors import UserError
from search.engine import Evaluation, SearchResult
from search.objectives import Budget, Constraint, Metric, unit_suffix
from search.objectives import fmt_value as _fmt


class NoFeasibleArch(UserError):
    """A budget that no evaluated arch meets (the message names the closest one)."""


@dataclass(frozen=True)
class BudgetChoice:
    budget: Budget
    evaluation: Evaluation | None  # the chosen arch, None when nothing meets the budget
    closest: Evaluation | None  # when nothing meets it: the arch closest to its limits
    message: str

    @property
    def ok(self) -> bool:
        return self.evaluation is not None


def describe_limits(budget: Budget, metrics: Mapping[str, Metric]) -> str:
    return ", ".join(c.describe(metrics[c.name].direction, metrics[c.name].unit) for c in budget.constraints)


def figures(e: Evaluation, metrics: Mapping[str, Metric]) -> str:
    return ", ".join(f"{n} {_fmt(e.values[n])}{unit_suffix(n, m.unit)}" for n, m in metrics.items())


def _violation(e: Evaluation, limits: Sequence[Constraint], metrics: Mapping[str, Metric]) -> float:
    return float(sum(max(0.0, c.violation(np.array([e.values[c.name]]), metrics[c.name].direction)[0]) for c in limits))


def select_for_budgets(
    result: SearchResult | Sequence[Evaluation],
    budgets: Sequence[Budget],
    objectives: Sequence[Metric] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    constraints: Sequence[Constraint] = (),
) -> list[BudgetChoice]:
    """One `BudgetChoice` per budget, in order; never raises for an unmet budget (see
    `raise_for_unmet`). Pass a `SearchResult`, or evaluations with objectives and metrics."""
    if isinstance(result, SearchResult):
        evaluations, objectives = result.evaluations, result.objectives
        metrics, constraints = result.metrics, result.constraints
    else:
        evaluations = list(result)
        if objectives is None:
            raise ValueError("select_for_budgets needs the objectives when given plain evaluations")
        metrics = dict(metrics or {m.name: m for m in objectives})
    choices = []
    for b in budgets:
        if not isinstance(b, Budget):
            raise ValueError(f"budgets must be search.Budget objects, got {type(b).__name__}")
        for c in b.constraints:
            if c.name not in metrics:
                raise ValueError(f"budget {b.name!r} limits {c.name!r}; evaluated metrics: {', '.join(metrics)}")
        limits = [*b.constraints, *constraints]
        text = describe_limits(b, metrics)
        feasible = [e for e in evaluations if _violation(e, limits, metrics) <= 0]
        if feasible:
            best = min(feasible, key=lambda e: tuple(-m.sign * e.values[m.name] for m in objectives))
            msg = f"budget {b.name!r} ({text}): {best.key} — {figures(best, metrics)}"
            choices.append(BudgetChoice(b, best, None, msg))
            continue
        if not evaluations:
            msg = f"budget {b.name!r} ({text}): nothing was evaluated, so no arch can be named"
            choices.append(BudgetChoice(b, None, None, msg))
            continue
        primary = objectives[0]
        closest = min(
            evaluations, key=lambda e: (_violation(e, limits, metrics), -primary.sign * e.values[primary.name])
        )
        excess = ", ".join(
            f"{c.name} {_fmt(closest.values[c.name])} vs limit {_fmt(c.limit)} "
            f"({100 * c.violation(np.array([closest.values[c.name]]), metrics[c.name].direction)[0]:+.0f}%)"
            for c in limits
            if c.violation(np.array([closest.values[c.name]]), metrics[c.name].direction)[0] > 0
        )
        msg = (
            f"budget {b.name!r} ({text}): none of the {len(evaluations)} evaluated archs meets it; "
            f"closest: {closest.key} with {excess}; {figures(closest, metrics)}"
        )
        choices.append(BudgetChoice(b, None, closest, msg))
    return choices


def raise_for_unmet(choices: Sequence[BudgetChoice]) -> None:
    """Raise `NoFeasibleArch` naming every unmet budget and its closest arch."""
    unmet = [c.message for c in choices if not c.ok]
    if unmet:
        raise NoFeasibleArch("; ".join(unmet))


def choices_table(choices: Sequence[BudgetChoice], metrics: Mapping[str, Metric], title: str = "per budget") -> Table:
    table = Table(title=title)
    table.add_column("budget")
    table.add_column("limits")
    for n, m in metrics.items():
        table.add_column(f"{n}{f' ({m.unit})' if m.unit and m.unit.lower() != n.lower() else ''}", justify="right")
    table.add_column("arch", overflow="fold")
    for c in choices:
        e = c.evaluation or c.closest
        cells = [_fmt(e.values[n]) for n in metrics] if e is not None else ["-"] * len(metrics)
        arch = e.key if c.ok else (f"NONE MEETS IT; closest: {e.key}" if e is not None else "NONE MEETS IT")
        table.add_row(c.budget.name, describe_limits(c.budget, metrics), *cells, arch)
    return table
