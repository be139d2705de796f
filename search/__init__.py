"""Per-device search for sub-networks: the engine, budgets and per-budget selection.

Library entry: `search.run(space, objectives, search.SearchSettings(n_trials, population_size,
seed, storage=None), constraints=(), budgets=())` -> `SearchResult` (the feasible Pareto
front and every evaluation), and `result.select(budgets)` (or
`search.select_for_budgets(result, budgets)`) for the best arch under each budget. Names are
imported lazily so that importing `search` does not load Optuna.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "run": "search.engine",
    "SearchSettings": "search.problem",
    "Problem": "search.problem",
    "SearchResult": "search.result",
    "Evaluation": "search.result",
    "Metric": "search.objectives",
    "Constraint": "search.objectives",
    "Budget": "search.objectives",
    "metric": "search.objectives",
    "from_predictor": "search.objectives",
    "mbv3_macs": "search.objectives",
    "mbv3_params": "search.objectives",
    "table_metric": "search.objectives",
    "GeneSpace": "search.genes",
    "MBV3Genes": "search.genes",
    "NB201Genes": "search.genes",
    "BudgetChoice": "search.result",
    "NoFeasibleArch": "search.select",
    "select_for_budgets": "search.select",
    "raise_for_unmet": "search.select",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
