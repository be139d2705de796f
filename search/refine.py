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

from search.genes import GeneSpace
from search.objectives import Constraint, Metric
from search.pareto import non_dominated
from search.problem import Problem

CLIMB_MARGIN = 0.1  # neighbours of a feasible arch: predicted at most 10% over a limit
DESCEND_MARGIN = 0.3  # neighbours of a too-costly arch: predicted at most 30% over
MIN_MODEL_R2 = 0.8  # below this fit the model filters nothing
REFIT_GROWTH = 0.1  # refit the models once the evaluations grew by 10% since the last fit


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


def row_keys(rows: np.ndarray) -> list[bytes]:
    """`row_key` of each row, from one conversion."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    data, width = rows.tobytes(), rows.shape[1] * 8
    return [data[i : i + width] for i in range(0, len(data), width)]


class Neighbours:
    """`GeneSpace.neighbours` (the distinct canonical rows one gene away, in ascending
    lexicographic order), vectorised: every one-gene change is made at once from a table of
    (gene, choice) pairs, and the rows are sorted on a few integers that pack their genes."""

    def __init__(self, space: GeneSpace) -> None:
        self.space = space
        cards = space.cardinalities
        self.genes = np.repeat(np.arange(len(cards)), cards)
        self.choices = np.concatenate([np.arange(c) for c in cards]).astype(np.int64)
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (gene indices, radices): each packs < 2**62
        start = 0
        while start < len(cards):
            end, size = start, 1
            while end < len(cards) and size * int(cards[end]) < 2**62:
                size *= int(cards[end])
                end += 1
            end = max(end, start + 1)
            radix = np.cumprod([1, *cards[start + 1 : end][::-1]])[::-1].astype(np.int64)
            self.chunks.append((np.arange(start, end), radix))
            start = end

    def __call__(self, row: np.ndarray) -> np.ndarray:
        changed = self.choices != row[self.genes]
        rows = np.repeat(row[None, :], int(changed.sum()), axis=0)
        rows[np.arange(rows.shape[0]), self.genes[changed]] = self.choices[changed]
        rows = self.space.canonical(rows)
        if not rows.shape[0]:
            return rows
        packed = [rows[:, genes] @ radix for genes, radix in self.chunks]
        order = np.lexsort(packed[::-1])
        packed = [p[order] for p in packed]
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = np.any([p[1:] != p[:-1] for p in packed], axis=0)
        own = self.space.canonical(row[None, :])[0]
        rows = rows[order[keep]]
        return rows[(rows != own).any(axis=1)]


def _violations(values: Mapping[str, np.ndarray], constraints: Sequence[Constraint], metrics: Mapping[str, Metric]):
    """(n,) total positive relative violation of `constraints`."""
    n = len(next(iter(values.values())))
    total = np.zeros(n)
    for c in constraints:
        total += np.maximum(c.violation(values[c.name], metrics[c.name].direction), 0.0)
    return total


class Refiner:
    """Refinement across the generations of one search: the evaluations so far (appended as
    they come), the limit models and what the expansion learnt about each source.

    Proposing costs about the same at every size of the search, because nothing is redone per
    generation that does not change: the models are refitted when the evaluations have grown
    by `REFIT_GROWTH` since the last fit (every generation early on), a source whose neighbours
    are all evaluated is dropped for good, and a source whose unevaluated neighbours the
    current models all put too far over a task's limits is parked for that task, with those
    neighbours: it could propose nothing until a refit, and at a refit the parked neighbours
    of every source are predicted in one batch, so that only the sources with one now within
    the limits are looked at again."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.n = 0
        self._rows = np.empty((64, problem.space.n_genes), dtype=np.int64)
        self._values = {name: np.empty(64) for name in problem.metrics}
        self.index: dict[bytes, int] = {}  # row key -> position of the evaluation
        self.models: dict[str, AdditiveModel] = {}
        self.fitted_at = 0  # evaluations the models were fitted on
        self.exhausted = np.zeros(64, dtype=bool)  # every neighbour evaluated
        self.parked: dict[int, np.ndarray] = {}  # task -> mask of the sources it cannot use
        self.parked_rows: dict[int, dict[int, np.ndarray]] = {}  # task -> source -> its unevaluated neighbours
        self.neighbour_calls = 0  # neighbourhoods computed (the expansion's unit of work)
        self.budget_tasks = _BudgetTasks(problem)
        self.neighbours = Neighbours(problem.space)

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: self.n]

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {name: v[: self.n] for name, v in self._values.items()}

    def add(self, rows: np.ndarray, values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Append evaluated canonical `rows` with their metrics (`values[name][i]` for row i)."""
        m = len(rows)
        if self.n + m > len(self._rows):
            size = max(2 * len(self._rows), self.n + m)
            self._rows = np.resize(self._rows, (size, self._rows.shape[1]))
            self._values = {name: np.resize(v, size) for name, v in self._values.items()}
            self.exhausted = np.resize(self.exhausted, size)
        self._rows[self.n : self.n + m] = rows
        for name, v in self._values.items():
            v[self.n : self.n + m] = values[name]
        self.exhausted[self.n : self.n + m] = False
        for i, key in enumerate(row_keys(self._rows[self.n : self.n + m])):
            self.index.setdefault(key, self.n + i)
        self.n += m

    def propose(self, busy: set[bytes], k: int, rng: np.random.Generator) -> np.ndarray:
        """Up to `k` canonical rows neither evaluated nor in `busy` (the keys of rows being
        evaluated elsewhere); `busy` is updated with the proposals."""
        if k <= 0 or self.n == 0:
            return np.empty((0, self.problem.space.n_genes), dtype=np.int64)
        tasks = self.budget_tasks.tasks(self.values) if self.problem.budgets else []
        if not self.problem.budgets:
            tasks.append(_front_task(self.problem, self.values, rng))
        for t in range(len(tasks)):
            parked = self.parked.setdefault(t, np.zeros(self.n, dtype=bool))
            if len(parked) < self.n:
                self.parked[t] = np.concatenate([parked, np.zeros(self.n - len(parked), dtype=bool)])
        if not self.fitted_at or self.n >= (1 + REFIT_GROWTH) * self.fitted_at:
            self.models = _models(self.problem, self.rows, self.values)
            self.fitted_at = self.n
            for t, task in enumerate(tasks):
                self.unpark(t, task)
        return _Expansion(self, tasks, busy, rng).run(k)

    def park(self, t: int, source: int, cands: np.ndarray) -> None:
        """Task `t` cannot use `source`: its unevaluated neighbours `cands` are all too far over."""
        self.parked[t][source] = True
        self.parked_rows.setdefault(t, {})[source] = cands.astype(np.int16)

    def unpark(self, t: int, task: _Task) -> None:
        """After a refit: the parked sources of task `t` with a neighbour now admissible."""
        stored = self.parked_rows.get(t)
        if not stored:
            return
        sources = np.fromiter(stored, dtype=np.int64, count=len(stored))
        sizes = [len(stored[s]) for s in sources]
        ok = self.admissible(np.concatenate([stored[s] for s in sources]), task)
        free = sources[np.add.reduceat(ok, np.cumsum([0, *sizes[:-1]])) > 0]
        self.parked[t][free] = False
        for s in free:
            del stored[s]

    def pending(self, source: int) -> np.ndarray:
        """The neighbours of an evaluated row that are not evaluated (marks it exhausted when none)."""
        self.neighbour_calls += 1
        cands = self.neighbours(self._rows[source])
        cands = cands[np.array([k not in self.index for k in row_keys(cands)], dtype=bool)]
        if not cands.shape[0]:
            self.exhausted[source] = True
        return cands

    def admissible(self, cands: np.ndarray, task: _Task) -> np.ndarray:
        ok = np.ones(cands.shape[0], dtype=bool)
        for c in task.limits:
            if c.name in self.models:
                direction = self.problem.metrics[c.name].direction
                ok &= c.violation(self.models[c.name].predict(cands), direction) <= task.margin
        return ok


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


def _front_task(problem: Problem, values: Mapping[str, np.ndarray], rng: np.random.Generator) -> _Task:
    """Without budgets: the members of the current feasible front, in random order."""
    objectives, constraints = problem.objectives, problem.constraints
    n = len(values[objectives[0].name])
    violation = _violations(values, constraints, problem.metrics) if constraints else np.zeros(n)
    feasible = np.flatnonzero(violation <= 0)
    pts = np.stack([m.sign * values[m.name][feasible] for m in objectives], axis=1)
    return _Task(rng.permutation(feasible[non_dominated(pts)]), list(constraints), np.inf)


class _Ranking:
    """Evaluation indices in the lexicographic order of their keys (the first key first, ties
    by the next ones, then by index: the order of `np.lexsort` with the keys reversed), kept
    sorted as evaluations are appended: the new ones are merged in, nothing is sorted again."""

    def __init__(self) -> None:
        self.order = np.empty(0, dtype=np.int64)

    def update(self, keys: Sequence[np.ndarray]) -> np.ndarray:
        """The order of every evaluation so far; `keys[j][i]` is the j-th key of evaluation i."""
        m0 = len(self.order)
        if len(keys[0]) > m0:
            new = m0 + np.lexsort([k[m0:] for k in reversed(keys)])
            old = [k[self.order] for k in keys]
            lo = np.searchsorted(old[0], keys[0][new], "left")
            at = np.searchsorted(old[0], keys[0][new], "right")  # after every equal old one
            for i in np.flatnonzero(lo < at):  # ties on the first key: narrow by the next keys
                for j in range(1, len(keys)):
                    part = old[j][lo[i] : at[i]]
                    x = keys[j][new[i]]
                    lo[i], at[i] = lo[i] + np.searchsorted(part, x, "left"), lo[i] + np.searchsorted(part, x, "right")
                    if lo[i] == at[i]:
                        break
            self.order = np.insert(self.order, at, new)
        return self.order


class _BudgetTasks:
    """Climb and descend per budget, from orders kept sorted across generations (`_Ranking`):
    the evaluations best first (climb: the feasible ones), and per budget, by total violation
    of its limits, then best first (descend: the infeasible ones that beat the incumbent)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.limits = [[*b.constraints, *problem.constraints] for b in problem.budgets]
        self.rank = _Ranking()
        self.viol = [np.empty(0) for _ in self.limits]
        self.by_viol = [_Ranking() for _ in self.limits]

    def tasks(self, values: Mapping[str, np.ndarray]) -> list[_Task]:
        objectives, metrics = self.problem.objectives, self.problem.metrics
        score = objectives[0].sign * values[objectives[0].name]
        order = self.rank.update([-(m.sign * values[m.name]) for m in objectives])
        tasks = []
        for b, limits in enumerate(self.limits):
            new = {name: v[len(self.viol[b]) :] for name, v in values.items()}
            self.viol[b] = viol = np.concatenate([self.viol[b], _violations(new, limits, metrics)])
            feasible = viol <= 0
            climb = order[feasible[order]]
            best = score[climb[0]] if climb.size else -np.inf
            by_viol = self.by_viol[b].update([viol, -score])
            descend = by_viol[(~feasible & (score > best))[by_viol]]
            tasks += [_Task(climb, limits, CLIMB_MARGIN), _Task(descend, limits, DESCEND_MARGIN)]
        return tasks


class _Expansion:
    """Fills the proposals: every task gets an equal share first (starting from a random task,
    so that no budget is always served last), then any capacity left goes round-robin."""

    def __init__(self, refiner: Refiner, tasks: list[_Task], busy: set[bytes], rng: np.random.Generator) -> None:
        self.refiner, self.tasks, self.busy, self.rng = refiner, tasks, busy, rng
        # Sources that can still propose: not exhausted, not parked for the task.
        self.sources = [
            task.sources[~(refiner.exhausted[task.sources] | refiner.parked[t][task.sources])]
            for t, task in enumerate(tasks)
        ]
        self.out: list[np.ndarray] = []
        self.cursor = [0] * len(tasks)
        self.active = [True] * len(tasks)

    def run(self, k: int) -> np.ndarray:
        n = len(self.tasks)
        start = int(self.rng.integers(n)) if n else 0
        turn = [(start + i) % n for i in range(n)]
        quota = -(-k // max(n, 1))
        for t in turn:
            self.expand(t, min(quota, k - len(self.out)), max_sources=self.refiner.n)
        while len(self.out) < k and any(self.active):
            for t in turn:
                if self.active[t] and len(self.out) < k:
                    self.expand(t, k - len(self.out), max_sources=1)
        return np.array(self.out, dtype=np.int64).reshape(-1, self.refiner.problem.space.n_genes)

    def fresh(self, t: int, source: int) -> np.ndarray:
        """The source's admissible neighbours that are neither evaluated nor busy; parks the
        source for the task when the models put every unevaluated neighbour too far over."""
        task, refiner = self.tasks[t], self.refiner
        cands = pending = refiner.pending(source)
        if cands.shape[0] and np.isfinite(task.margin):
            ok = refiner.admissible(pending, task)
            if not ok.any():
                refiner.park(t, source, pending)
            cands = pending[ok]
        return cands[np.array([k not in self.busy for k in row_keys(cands)], dtype=bool)]

    def expand(self, t: int, cap: int, max_sources: int) -> None:
        """Add fresh admissible neighbours of the task's next sources, up to `cap` rows."""
        sources = self.sources[t]
        got = used = 0
        while self.cursor[t] < len(sources) and got < cap and used < max_sources:
            cands = self.fresh(t, sources[self.cursor[t]])
            take = cands[self.rng.permutation(cands.shape[0])][: cap - got]
            if take.shape[0] == cands.shape[0]:
                self.cursor[t] += 1  # nothing of this source is left over
            if take.shape[0]:
                used += 1
            self.busy.update(row_keys(take))
            self.out.extend(take)
            got += take.shape[0]
        if self.cursor[t] >= len(sources):
            self.active[t] = False
