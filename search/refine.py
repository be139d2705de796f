"""Budget-aware local moves: the proposals that make the search sample-efficient per budget.

NSGA-II spreads its evaluations over the whole front; a budget only cares about the best
arch just under its limits. Each generation, for every budget, two moves propose the unseen
one-gene neighbours of an evaluated arch:

- *climb*: the best feasible arch (by the primary objective) whose neighbours are not all
  seen yet: hill climbing under the budget, best first;
- *descend*: among archs that beat the budget's incumbent but break its limits, the one
  closest to the limits: the best feasible archs often sit one gene away from a better,
  slightly too costly one (and a budget nothing meets gets searched for its closest arch).

A ridge model over one-hot genes, refitted on every evaluation so far, predicts each
limited metric (latency, power, MACs are close to additive over the genes); neighbours
predicted far over a limit are skipped. Without budgets, the moves expand the members of
the current front instead (Pareto local search). Everything here is a pure function of the
evaluations so far, so a resumed or shared study proposes the same moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search.objectives import Constraint, Metric
from search.pareto import non_dominated
from search.problem import Problem

CLIMB_MARGIN = 0.1  # neighbours of a feasible arch: predicted at most 10% over a limit
DESCEND_MARGIN = 0.3  # neighbours of a too-costly arch: predicted at most 30% over
MIN_MODEL_R2 = 0.8  # below this fit the model filters nothing


@dataclass(frozen=True)
class AdditiveModel:
    """value ~ intercept + sum over genes of a weight per (gene, choice): ridge on one-hot."""

    offsets: np.ndarray  # start column of each gene's one-hot block
    weights: np.ndarray
    intercept: float
    r2: float

    @classmethod
    def fit(
        cls, rows: np.ndarray, y: np.ndarray, cardinalities: np.ndarray, ridge: float = 1.0, sweeps: int = 6
    ) -> AdditiveModel:
        """Ridge fit by backfitting (Gauss-Seidel over the genes): a few bincounts per gene,
        no dense solve, so it stays cheap for 46 genes and thousands of rows."""
        offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype(np.int64)
        y = np.asarray(y, dtype=np.float64)
        mean = float(y.mean())
        weights = np.zeros(int(cardinalities.sum()))
        resid = y - mean
        for _ in range(sweeps):
            for j, card in enumerate(cardinalities):
                w = weights[offsets[j] : offsets[j] + card]
                resid += w[rows[:, j]]  # take gene j out
                new = np.bincount(rows[:, j], weights=resid, minlength=card) / (
                    np.bincount(rows[:, j], minlength=card) + ridge
                )
                weights[offsets[j] : offsets[j] + card] = new
                resid -= new[rows[:, j]]
        var = float(((y - mean) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / var if var > 0 else 1.0
        return cls(offsets, weights, mean, r2)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.intercept + self.weights[rows + self.offsets].sum(axis=1)


def row_key(row: np.ndarray) -> bytes:
    return np.asarray(row, dtype=np.int64).tobytes()


def _violations(values: Mapping[str, np.ndarray], constraints: Sequence[Constraint], metrics: Mapping[str, Metric]):
    """(n,) total positive relative violation of `constraints`."""
    n = len(next(iter(values.values())))
    total = np.zeros(n)
    for c in constraints:
        total += np.maximum(c.violation(values[c.name], metrics[c.name].direction), 0.0)
    return total


def rank_order(values: Mapping[str, np.ndarray], objectives: Sequence[Metric]) -> np.ndarray:
    """Indices best first by the first objective, ties by the next ones (lexicographic)."""
    keys = [-(m.sign * values[m.name]) for m in reversed(objectives)]
    return np.lexsort(keys)


def propose(
    problem: Problem,
    rows: np.ndarray,
    values: Mapping[str, np.ndarray],
    seen: set[bytes],
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `k` unseen canonical rows: per-budget climb/descend moves, or front moves.

    `rows` (n, genes) are the evaluated canonical rows, `values[name]` their metrics,
    `seen` the keys (`row_key`) of evaluated, in-flight and already proposed rows; it is
    updated with the proposals."""
    rows = np.asarray(rows, dtype=np.int64)
    if k <= 0 or rows.shape[0] == 0:
        return np.empty((0, problem.space.n_genes), dtype=np.int64)
    tasks = _tasks(problem, values, rng)
    expansion = _Expansion(problem, rows, _models(problem, rows, values), tasks, seen, rng)
    return expansion.run(k)


@dataclass(frozen=True)
class _Task:
    """Sources (evaluated row indices, in order of preference) whose neighbours to propose,
    the limits they should respect and how far over them (predicted) a neighbour may be."""

    sources: np.ndarray
    limits: Sequence[Constraint]
    margin: float


def _models(problem: Problem, rows: np.ndarray, values: Mapping[str, np.ndarray]) -> dict[str, AdditiveModel]:
    """Models of the limited metrics that fit well enough to skip neighbours far over a limit."""
    models = {}
    if rows.shape[0] >= 2 * problem.space.n_genes:
        for name in problem.limited:
            m = AdditiveModel.fit(rows, values[name], problem.space.cardinalities)
            if m.r2 >= MIN_MODEL_R2:
                models[name] = m
    return models


def _tasks(problem: Problem, values: Mapping[str, np.ndarray], rng: np.random.Generator) -> list[_Task]:
    """Climb and descend per budget; without budgets, the current feasible front."""
    objectives, constraints, metrics = problem.objectives, problem.constraints, problem.metrics
    order = rank_order(values, objectives)
    score = objectives[0].sign * values[objectives[0].name]
    tasks = []
    for b in problem.budgets:
        limits = [*b.constraints, *constraints]
        viol = _violations(values, limits, metrics)
        feasible = viol <= 0
        climb = order[feasible[order]]
        best = score[climb[0]] if climb.size else -np.inf
        over = np.flatnonzero(~feasible & (score > best))
        descend = over[np.lexsort((-score[over], viol[over]))]
        tasks += [_Task(climb, limits, CLIMB_MARGIN), _Task(descend, limits, DESCEND_MARGIN)]
    if not problem.budgets:
        n = len(score)
        violation = _violations(values, constraints, metrics) if constraints else np.zeros(n)
        feasible = np.flatnonzero(violation <= 0)
        pts = np.stack([m.sign * values[m.name][feasible] for m in objectives], axis=1)
        tasks.append(_Task(rng.permutation(feasible[non_dominated(pts)]), list(constraints), np.inf))
    return tasks


class _Expansion:
    """Fills the proposals: every task gets an equal share first (starting from a random task,
    so that no budget is always served last), then any capacity left goes round-robin."""

    def __init__(
        self,
        problem: Problem,
        rows: np.ndarray,
        models: dict[str, AdditiveModel],
        tasks: list[_Task],
        seen: set[bytes],
        rng: np.random.Generator,
    ) -> None:
        self.problem, self.rows, self.models, self.tasks = problem, rows, models, tasks
        self.seen, self.rng = seen, rng
        self.out: list[np.ndarray] = []
        self.cursor = [0] * len(tasks)
        self.active = [True] * len(tasks)

    def run(self, k: int) -> np.ndarray:
        n = len(self.tasks)
        start = int(self.rng.integers(n)) if n else 0
        turn = [(start + i) % n for i in range(n)]
        quota = -(-k // max(n, 1))
        for t in turn:
            self.expand(t, min(quota, k - len(self.out)), max_sources=len(self.rows))
        while len(self.out) < k and any(self.active):
            for t in turn:
                if self.active[t] and len(self.out) < k:
                    self.expand(t, k - len(self.out), max_sources=1)
        return np.array(self.out, dtype=np.int64).reshape(-1, self.problem.space.n_genes)

    def admissible(self, cands: np.ndarray, task: _Task) -> np.ndarray:
        ok = np.ones(cands.shape[0], dtype=bool)
        for c in task.limits:
            if c.name in self.models:
                direction = self.problem.metrics[c.name].direction
                ok &= c.violation(self.models[c.name].predict(cands), direction) <= task.margin
        return ok

    def expand(self, t: int, cap: int, max_sources: int) -> None:
        """Add fresh admissible neighbours of the task's next sources, up to `cap` rows."""
        task = self.tasks[t]
        got = used = 0
        while self.cursor[t] < len(task.sources) and got < cap and used < max_sources:
            cands = self.problem.space.neighbours(self.rows[task.sources[self.cursor[t]]])
            cands = cands[np.array([row_key(c) not in self.seen for c in cands], dtype=bool)]
            if cands.shape[0] and np.isfinite(task.margin):
                cands = cands[self.admissible(cands, task)]
            take = cands[self.rng.permutation(cands.shape[0])][: cap - got]
            if take.shape[0] == cands.shape[0]:
                self.cursor[t] += 1  # nothing of this source is left over
            if take.shape[0]:
                used += 1
            for c in take:
                self.seen.add(row_key(c))
            self.out.extend(take)
            got += take.shape[0]
        if self.cursor[t] >= len(task.sources):
            self.active[t] = False
