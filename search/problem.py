"""What a search is asked (`Problem`) and how it runs (`SearchSettings`): plain, validated values."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ofa.errors import check_int
from ofa.space import MBV3Space
from search.genes import GeneSpace, as_gene_space
from search.objectives import Budget, Constraint, Metric, collect_metrics

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

SAMPLERS = ("refined", "nsga2", "random")


@dataclass(frozen=True)
class Problem:
    """The gene space, the objectives, the run's constraints, the budgets refinement focuses
    on, and every metric evaluated, by name (`collect_metrics`). Build it with `Problem.of`."""

    space: GeneSpace
    objectives: tuple[Metric, ...]
    constraints: tuple[Constraint, ...]
    budgets: tuple[Budget, ...]
    metrics: dict[str, Metric]

    @classmethod
    def of(
        cls,
        space: GeneSpace | MBV3Space,
        objectives: Sequence[Metric],
        constraints: Sequence[Constraint] = (),
        budgets: Sequence[Budget] = (),
    ) -> Problem:
        objectives, constraints, budgets = tuple(objectives), tuple(constraints), tuple(budgets)
        metrics = collect_metrics(objectives, constraints, budgets)
        return cls(as_gene_space(space), objectives, constraints, budgets, metrics)

    @property
    def limited(self) -> set[str]:
        """Names of the metrics that a budget or a run constraint limits."""
        return {c.name for b in self.budgets for c in b.constraints} | {c.name for c in self.constraints}

    def evaluate(self, configs: list[Any]) -> list[dict[str, float]]:
        """Every metric of each config, one vectorised call per metric."""
        cols = {name: m(configs).tolist() for name, m in self.metrics.items()}
        return [{name: col[i] for name, col in cols.items()} for i in range(len(configs))]

    def violations(self, values: Sequence[dict[str, float]]) -> list[dict[str, float]]:
        """Each config's run-constraint values as Optuna takes them (<= 0: met)."""
        cols = {
            c.name: c.violation(np.array([v[c.name] for v in values]), self.metrics[c.name].direction).tolist()
            for c in self.constraints
        }
        return [{name: col[i] for name, col in cols.items()} for i in range(len(values))]


@dataclass(frozen=True)
class SearchSettings:
    """How one search runs.

    `n_trials` counts distinct configs evaluated (a trial repeating one is answered from the
    cache); `population_size` is the generation size; `seed` makes a fresh study
    deterministic. `sampler`: "refined" (NSGA-II plus refinement, `search.refine`), "nsga2"
    (Optuna's NSGA-II alone) or "random"; `refine_share` is the share of each generation given
    to refinement. `storage`: None (memory), an RDB URL or a journal file (`search.storage`);
    an existing study of `study_name` resumes and may be shared by several workers, who wait
    at most `wait_timeout` seconds for a config another worker is evaluating. `device`: what
    the metrics were measured or predicted on (`ofa-search`: the device profile's name); it
    is part of the default study name (`search-<device>-<space fingerprint>-<objectives>`)
    and of the study's signature, so that searches of two devices never share a study."""

    n_trials: int
    population_size: int
    seed: int = 0
    sampler: str = "refined"
    study_name: str | None = None
    refine_share: float = 0.8
    wait_timeout: float = 600.0
    storage: str | os.PathLike | BaseStorage | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler = {self.sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
        for name, low in (("n_trials", 1), ("population_size", 2)):
            _check_int(name, getattr(self, name), low)
        _check_int("seed", self.seed, None)
        if not 0.0 <= self.refine_share <= 1.0:
            raise ValueError(f"refine_share = {self.refine_share} is not allowed; it must lie in [0, 1]")
        if not self.wait_timeout >= 0:
            raise ValueError(f"wait_timeout = {self.wait_timeout} is not allowed; it must be >= 0 seconds")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise ValueError(f"device = {self.device!r} is not allowed; it must be a non-empty name or None")


def _check_int(name: str, value: Any, low: int | None) -> None:
    """`check_int`, where numpy integers count as integers too and `low=None` allows any integer."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # a numpy integer
    if low is not None:
        check_int(name, value, low)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} = {value!r} is not allowed; allowed: an integer")
