"""Per-budget selection on a search's evaluations (the rule is `search.result.choose`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ofa.errors import UserError
from search.objectives import Budget, Constraint, Metric
from search.result import BudgetChoice, Evaluation, SearchResult, choose, describe_limits, figures

__all__ = [
    "BudgetChoice",
    "NoFeasibleArch",
    "describe_limits",
    "figures",
    "raise_for_unmet",
    "select_for_budgets",
]


class NoFeasibleArch(UserError):
    """A budget that no evaluated arch meets (the message names the closest one)."""


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
        return result.select(budgets)
    if objectives is None:
        raise ValueError("select_for_budgets needs the objectives when given plain evaluations")
    return choose(list(result), budgets, objectives, dict(metrics or {m.name: m for m in objectives}), constraints)


def raise_for_unmet(choices: Sequence[BudgetChoice]) -> None:
    """Raise `NoFeasibleArch` naming every unmet budget and its closest arch."""
    unmet = [c.message for c in choices if not c.ok]
    if unmet:
        raise NoFeasibleArch("; ".join(unmet))
