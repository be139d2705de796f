"""The search driver: an Optuna study asked and told in generation-sized batches.

Each generation asks `population_size` trials of one study: refinement moves
(`search.refine`, enqueued as fixed trials) and children of Optuna's `NSGAIISampler`
(`NSGAIIISampler` for three or more objectives), decodes them to canonical configs,
evaluates the configs not seen before in one vectorised call per metric, records the
constraints with `trial.set_constraint` and tells the study. A trial that repeats a
config is answered from the cache; only distinct configs count towards `n_trials`.

The study lives in memory by default, or in any Optuna storage (`sqlite:///search.db`, a
journal file `search.log`): a run against an existing study resumes it without
re-evaluating a stored config, and several processes can work on one study (a config that
another worker is evaluating is waited for, not evaluated twice).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ofa.space import MBV3Space
from search.genes import GeneSpace, as_gene_space
from search.objectives import Budget, Constraint, Metric, collect_metrics
from search.pareto import non_dominated
from search.refine import propose, row_key
from search.storage import claim_lock, open_storage, sync

SAMPLERS = ("refined", "nsga2", "random")
KEY, EVALUATED, ORIGIN, METRICS, CLAIM = "key", "evaluated", "origin", "metrics", "claim"
STALL_GENERATIONS = 50  # stop when this many generations in a row bring no new config


@dataclass(frozen=True)
class Evaluation:
    """One distinct config and its metrics (`feasible`: meets the run's constraints)."""

    config: Any
    key: str
    values: dict[str, float]
    feasible: bool
    trial: int


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

    def select(self, budgets: Sequence[Budget]):  # -> list[BudgetChoice]
        from search.select import select_for_budgets

        return select_for_budgets(self, budgets)

    def rows(self, evaluations: Sequence[Evaluation] | None = None) -> list[dict[str, Any]]:
        """Table rows (`arch`, metrics, `feasible`, `trial`) for CSV output."""
        evs = self.evaluations if evaluations is None else evaluations
        return [{"arch": e.key, **e.values, "feasible": e.feasible, "trial": e.trial} for e in evs]


def _make_sampler(name: str, n_objectives: int, population_size: int, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if n_objectives >= 3:
        return optuna.samplers.NSGAIIISampler(population_size=population_size, seed=seed)
    return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)


def _study_signature(space: GeneSpace, objectives: Sequence[Metric], constraints: Sequence[Constraint]) -> dict:
    return {
        "space_fingerprint": space.fingerprint(),
        "space": space.name,
        "objectives": [[m.name, m.direction] for m in objectives],
        "constraints": [[c.name, c.limit] for c in constraints],
    }


def _check_signature(study: optuna.Study, signature: dict) -> None:
    stored = study.user_attrs
    if not stored:
        for k, v in signature.items():
            study.set_user_attr(k, v)
        return
    for k, v in signature.items():
        if k in stored and stored[k] != v:
            what = "search space" if k.startswith("space") else k
            raise ValueError(
                f"study {study.study_name!r} in this storage was made for another {what}: "
                f"stored {k} = {stored[k]!r}, this search has {v!r}; use another study_name or storage"
            )


class _Driver:
    """State of one `run` call: the study, the cache of evaluated configs, the proposals."""

    def __init__(
        self,
        space: GeneSpace,
        objectives: Sequence[Metric],
        constraints: Sequence[Constraint],
        metrics: dict[str, Metric],
        study: optuna.Study,
        sampler_name: str,
        budgets: Sequence[Budget],
        wait_timeout: float,
        storage: BaseStorage | None,
    ) -> None:
        self.space, self.objectives, self.constraints = space, list(objectives), list(constraints)
        self.metrics, self.study, self.sampler_name = metrics, study, sampler_name
        self.budgets = list(budgets)
        self.wait_timeout = wait_timeout
        self.claim_lock = claim_lock(storage)
        self.distributions = {g.name: CategoricalDistribution(list(g.choices)) for g in space.genes}
        self.extra = [n for n in metrics if n not in {m.name for m in objectives}]
        # cache: canonical row key -> (row, config, values, trial number)
        self.cache: dict[bytes, tuple[np.ndarray, Any, dict[str, float], int]] = {}
        self._done: set[int] = set()  # trial numbers already read into the cache

    # --- the study's state -----------------------------------------------------------
    def sync(self) -> list[FrozenTrial]:
        """Read new evaluated trials into the cache; return every trial."""
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.number in self._done or t.state != TrialState.COMPLETE:
                continue
            self._done.add(t.number)
            if not t.user_attrs.get(EVALUATED):
                continue
            row = self.space.canonical(self.space.row_from_params(t.params)[None])[0]
            k = row_key(row)
            if k in self.cache:
                continue
            values = {m.name: float(v) for m, v in zip(self.objectives, t.values)}
            values.update({n: float(v) for n, v in t.user_attrs.get(METRICS, {}).items()})
            self.cache[k] = (row, self.space.decode(row), values, t.number)
        return trials

    def in_flight(self, trials: Sequence[FrozenTrial], mine: set[int]) -> dict[bytes, int]:
        """Row keys of other workers' unfinished trials -> their lowest trial number."""
        out: dict[bytes, int] = {}
        for t in trials:
            if t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number not in mine:
                params = t.params if t.state == TrialState.RUNNING else t.system_attrs.get("fixed_params", {})
                if len(params) == self.space.n_genes:
                    k = row_key(self.space.canonical(self.space.row_from_params(params)[None])[0])
                    out[k] = min(out.get(k, t.number), t.number)
        return out

    # --- one generation --------------------------------------------------------------
    def enqueue(self, rows: np.ndarray, origin: str) -> None:
        for row in rows:
            self.study.enqueue_trial(self.space.params(row), user_attrs={ORIGIN: origin})

    def evaluate(self, configs: list[Any]) -> list[dict[str, float]]:
        cols = {name: m(configs) for name, m in self.metrics.items()}
        return [{name: float(cols[name][i]) for name in self.metrics} for i in range(len(configs))]

    def violations(self, values: dict[str, float]) -> dict[str, float]:
        return {
            c.name: float(c.violation(np.array([values[c.name]]), self.metrics[c.name].direction)[0])
            for c in self.constraints
        }

    def tell(self, trial: optuna.Trial, values: dict[str, float], evaluated: bool) -> None:
        for name, v in self.violations(values).items():
            trial.set_constraint(name, v)
        trial.set_user_attr(EVALUATED, evaluated)
        if evaluated and self.extra:
            trial.set_user_attr(METRICS, {n: values[n] for n in self.extra})
        self.study.tell(trial, [values[m.name] for m in self.objectives])

    def claims(self, trials: Sequence[FrozenTrial], mine: set[int]) -> dict[bytes, int]:
        """Row keys that other workers' running trials have claimed -> the claiming trial."""
        out: dict[bytes, int] = {}
        for t in trials:
            if t.state == TrialState.RUNNING and t.number not in mine and t.user_attrs.get(CLAIM):
                out[row_key(self.space.canonical(self.space.row_from_params(t.params)[None])[0])] = t.number
        return out

    def generation(self, n_ask: int) -> int:
        """Ask `n_ask` trials, evaluate the configs nobody evaluated or claimed, tell all;
        return the number of configs evaluated here."""
        asked: list[optuna.Trial] = []
        told: set[int] = set()
        try:
            for _ in range(n_ask):
                asked.append(self.study.ask(self.distributions))
            mine = {t.number for t in asked}
            rows = self.space.canonical(np.stack([self.space.row_from_params(t.params) for t in asked]))
            keys = [row_key(r) for r in rows]
            first: dict[bytes, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            todo: dict[bytes, int] = {}  # key -> index of the asked trial that evaluates it
            wait: dict[bytes, int] = {}  # key -> trial number of another worker's claim
            # Deciding what to evaluate and claiming it is one critical section across workers,
            # so that two workers never both evaluate a config.
            with self.claim_lock:
                now = self.sync()
                sampler = self.study.sampler
                if isinstance(sampler, optuna.samplers.BaseGASampler):
                    # Enqueued (fixed) trials never reach sample_relative: give them the current
                    # generation so that NSGA-II selects parents among them too.
                    for t in now:
                        if t.number in mine:
                            sampler.get_trial_generation(self.study, t)  # no-op for sampled trials
                claimed = self.claims(now, mine)
                for k, i in first.items():
                    if k in self.cache:
                        continue
                    if k in claimed:
                        wait[k] = claimed[k]
                    else:
                        todo[k] = i
                        asked[i].set_user_attr(CLAIM, True)
            if todo:
                configs = [self.space.decode(rows[i]) for i in todo.values()]
                for (k, i), c, v in zip(todo.items(), configs, self.evaluate(configs)):
                    self.cache[k] = (rows[i], c, v, asked[i].number)
            if wait:
                for k in self.wait_for(wait, {k: asked[first[k]] for k in wait}, mine):
                    todo[k] = first[k]
            for i, (t, k) in enumerate(zip(asked, keys)):
                t.set_user_attr(KEY, self.space.key(self.cache[k][1]))
                self.tell(t, self.cache[k][2], evaluated=todo.get(k) == i)
                self._done.add(t.number)
                told.add(t.number)
            return len(todo)
        finally:
            for t in asked:
                if t.number not in told:
                    self.study.tell(t, state=TrialState.FAIL)

    def wait_for(self, wait: dict[bytes, int], trial_of: dict[bytes, optuna.Trial], mine: set[int]) -> set[bytes]:
        """Wait until other workers have evaluated the configs they claimed. A config whose
        claiming trial failed, or that takes longer than `wait_timeout`, is claimed and
        evaluated here (through `trial_of[key]`). Returns the keys evaluated here."""
        deadline = time.monotonic() + self.wait_timeout
        pending, taken = dict(wait), set()
        while True:
            self.sync()
            pending = {k: n for k, n in pending.items() if k not in self.cache}
            if not pending:
                return taken
            expired = time.monotonic() > deadline
            take = []
            with self.claim_lock:
                now = self.sync()
                claimed = self.claims(now, mine)
                for k in list(pending):
                    if k in self.cache:
                        pending.pop(k)
                    elif expired or k not in claimed:  # its claim failed (or is stuck): take it over
                        trial_of[k].set_user_attr(CLAIM, True)
                        take.append(k)
                    else:
                        pending[k] = claimed[k]
            if take:
                rows = [self.space.canonical(np.frombuffer(k, dtype=np.int64)[None])[0] for k in take]
                configs = [self.space.decode(r) for r in rows]
                for k, r, c, v in zip(take, rows, configs, self.evaluate(configs)):
                    self.cache[k] = (r, c, v, trial_of[k].number)
                    taken.add(k)
                    pending.pop(k)
            elif pending:
                time.sleep(0.05)


def run(
    space: GeneSpace | MBV3Space,
    objectives: Sequence[Metric],
    constraints: Sequence[Constraint],
    n_trials: int,
    population_size: int,
    seed: int,
    storage: str | Path | BaseStorage | None = None,
    *,
    budgets: Sequence[Budget] = (),
    sampler: str = "refined",
    seeds: Sequence[Any] | None = None,
    study_name: str | None = None,
    refine_share: float = 0.8,
    wait_timeout: float = 600.0,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Search `space` for configs good in every objective under `constraints`.

    `objectives` are `Metric`s (batched callables with a direction); `n_trials` counts
    distinct configs evaluated (a trial repeating one is answered from the cache);
    `population_size` is the generation size; `seed` makes a fresh study deterministic.
    `storage`: None (memory), an RDB URL or a journal file; an existing study of the same
    name resumes (its evaluations are never repeated) and may be shared by several workers.

    `budgets` focus refinement (`search.refine`) on the best arch under each budget;
    `sampler`: "refined" (NSGA-II plus refinement, the default), "nsga2" (Optuna's NSGA-II
    alone) or "random". `seeds`: configs evaluated first (default for "refined": the space's
    smallest and largest). `refine_share`: the share of each generation given to refinement.
    """
    gspace = as_gene_space(space)
    objectives, constraints, budgets = tuple(objectives), tuple(constraints), tuple(budgets)
    metrics = collect_metrics(objectives, constraints, budgets)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler = {sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    for name, v, low in (("n_trials", n_trials, 1), ("population_size", population_size, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} = {v!r} is not allowed; it must be an integer >= {low}")
    if not 0.0 <= refine_share <= 1.0:
        raise ValueError(f"refine_share = {refine_share} is not allowed; it must lie in [0, 1]")
    seed = int(seed)
    seeds = list(gspace.default_seeds() if seeds is None and sampler == "refined" else (seeds or []))
    seed_rows = np.stack([gspace.encode(c) for c in seeds]) if seeds else np.empty((0, gspace.n_genes), int)

    signature = _study_signature(gspace, objectives, constraints)
    name = study_name or f"search-{signature['space_fingerprint']}-{'-'.join(m.name for m in objectives)}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj = open_storage(storage)
    # The sampler's seed also depends on how many trials the study already holds, so that a
    # resumed study (or a second worker) does not replay the first run's random draws.
    probe = optuna.load_study(study_name=name, storage=storage_obj) if _exists(storage_obj, name) else None
    n_before = len(probe.get_trials(deepcopy=False)) if probe is not None else 0
    sampler_seed = seed if n_before == 0 else int(np.random.default_rng([seed, n_before]).integers(2**31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage_obj,
            study_name=name,
            directions=[m.direction for m in objectives],
            sampler=_make_sampler(sampler, len(objectives), population_size, sampler_seed),
            load_if_exists=True,
        )
    _check_signature(study, signature)

    driver = _Driver(gspace, objectives, constraints, metrics, study, sampler, budgets, wait_timeout, storage_obj)
    n_configs = gspace.n_configs()
    target = min(n_trials, n_configs)
    stopped, stall, gen = "reached n_trials", 0, 0
    trials = driver.sync()
    while True:
        n_eval = len(driver.cache)
        if progress is not None:
            progress(min(n_eval, target), target)
        others = driver.in_flight(trials, set())
        remaining = target - n_eval - len(others)
        if remaining <= 0:
            stopped = "reached n_trials" if target == n_trials else f"evaluated every config of the space ({n_configs})"
            break
        if stall >= STALL_GENERATIONS:
            stopped = f"no new config in {STALL_GENERATIONS} generations"
            break
        n_ask = min(population_size, remaining)
        rng = np.random.default_rng([seed, len(trials), gen])
        seen = set(driver.cache) | set(others)
        if not trials and len(seed_rows):
            fixed = np.unique(gspace.canonical(seed_rows), axis=0)[:n_ask]
            driver.enqueue(fixed, "seed")
        elif sampler == "refined" and driver.cache:
            rows = np.stack([v[0] for v in driver.cache.values()])
            values = {n: np.array([v[2][n] for v in driver.cache.values()]) for n in metrics}
            k = int(round(refine_share * n_ask))
            fixed = propose(gspace, rows, values, metrics, objectives, constraints, budgets, seen, k, rng)
            driver.enqueue(fixed, "refine")
        new = driver.generation(n_ask)
        sync(storage_obj)
        stall = 0 if new else stall + 1
        gen += 1
        trials = driver.sync()
    if progress is not None:
        progress(min(len(driver.cache), target), target)
    return _result(driver, trials, stopped)


def _exists(storage: BaseStorage | None, name: str) -> bool:
    return storage is not None and name in {s.study_name for s in storage.get_all_studies()}


def _result(driver: _Driver, trials: Sequence[FrozenTrial], stopped: str) -> SearchResult:
    evaluations = []
    for _row, config, values, number in sorted(driver.cache.values(), key=lambda v: v[3]):
        feasible = all(v <= 0 for v in driver.violations(values).values())
        evaluations.append(Evaluation(config, driver.space.key(config), values, feasible, number))
    feasible = [e for e in evaluations if e.feasible]
    if feasible:
        pts = np.array([[m.sign * e.values[m.name] for m in driver.objectives] for e in feasible])
        front = [e for e, keep in zip(feasible, non_dominated(pts)) if keep]
        front.sort(key=lambda e: [-m.sign * e.values[m.name] for m in driver.objectives])
    else:
        front = []
    return SearchResult(
        space=driver.space,
        objectives=tuple(driver.objectives),
        constraints=tuple(driver.constraints),
        evaluations=evaluations,
        front=front,
        n_trials=len(trials),
        study_name=driver.study.study_name,
        sampler=driver.sampler_name,
        stopped=stopped,
        metrics=dict(driver.metrics),
    )
