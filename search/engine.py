"""The search driver: an Optuna study filled in generation-sized batches.

Each generation holds `population_size` trials of one study: refinement moves
(`search.refine`) and children of Optuna's `NSGAIISampler` (`NSGAIIISampler` for three or
more objectives). Refinement moves (and the seed configs of a fresh study) are our own
proposals: they are evaluated directly and added as completed trials in one
`study.add_trials` call, carrying their constraints and the sampler's generation attribute
exactly as an asked trial would, so that NSGA-II selects parents among them. Only the
children go through `study.ask`/`study.tell`. Configs not seen before are evaluated in one
vectorised call per metric; a child that repeats a config is answered from the cache; only
distinct configs count towards `n_trials`.

Asking a 46-gene trial costs Optuna a few milliseconds, most of it per gene, which is why
proposals skip it; the GA sampler is also told the search space (every trial has the same
genes) instead of inferring it per ask, and added trials share one set of distributions.

The study lives in memory by default, or in any Optuna storage (`sqlite:///search.db`, a
journal file `search.log`): a run against an existing study resumes it without
re-evaluating a stored config, and several processes can work on one study (a config that
another worker is evaluating is waited for, not evaluated twice).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
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


class _KnownSpace:
    """GA sampler mixin: the relative search space is the run's genes, not inferred per trial.

    Optuna's GA samplers infer it for every asked trial by intersecting the distributions of
    the trials completed since the last ask and deep-copying the result: about half the cost
    of asking a 46-gene trial. Every trial of a study carries the same genes (its signature is
    checked), so the intersection is known: the genes with more than one choice, in name order
    as the intersection gives them (NSGA-II draws per gene in that order)."""

    def __init__(self, genes: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._genes = {n: d for n, d in sorted(genes.items()) if not d.single()}

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._genes)


class _NSGAII(_KnownSpace, optuna.samplers.NSGAIISampler):
    pass


class _NSGAIII(_KnownSpace, optuna.samplers.NSGAIIISampler):
    pass


# A subclass would store its generations under its own name: keep Optuna's, so that a study
# reads the same to Optuna's samplers and to earlier runs of this engine.
for _cls, _base in ((_NSGAII, optuna.samplers.NSGAIISampler), (_NSGAIII, optuna.samplers.NSGAIIISampler)):
    _cls._GENERATION_KEY = _base._GENERATION_KEY
    _cls._PARENT_CACHE_KEY_PREFIX = _base._PARENT_CACHE_KEY_PREFIX


def _make_sampler(
    name: str, n_objectives: int, population_size: int, seed: int, genes: dict[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if n_objectives >= 3:
        return _NSGAIII(genes, population_size=population_size, seed=seed)
    return _NSGAII(genes, population_size=population_size, seed=seed)


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


class _Entry(NamedTuple):
    """One evaluated config of the cache."""

    row: np.ndarray  # canonical gene row
    config: Any
    values: dict[str, float]
    number: int  # the trial that evaluated it (-1 until the study has numbered a trial we added)


class _AddedTrial(FrozenTrial):
    """A completed trial to add whose copy shares the distribution objects.

    Optuna's in-memory storage deep-copies every added trial; copying 46 distributions is most
    of the cost of adding one. Distributions are immutable values (Optuna's own
    `set_trial_param` stores the caller's object as is), so the copy keeps them and copies
    everything else; it is a plain `FrozenTrial`. Other storages serialise the trial anyway."""

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenTrial:
        memo.update({id(d): d for d in self.distributions.values()})
        plain = FrozenTrial.__new__(FrozenTrial)
        plain.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return plain


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
        distributions: dict[str, BaseDistribution],
    ) -> None:
        self.space, self.objectives, self.constraints = space, list(objectives), list(constraints)
        self.metrics, self.study, self.sampler_name = metrics, study, sampler_name
        self.budgets = list(budgets)
        self.wait_timeout = wait_timeout
        self.claim_lock = claim_lock(storage)
        # One set of distribution objects for every trial (asked or added) and the sampler.
        self.distributions = distributions
        self.extra = [n for n in metrics if n not in {m.name for m in objectives}]
        self.cache: dict[bytes, _Entry] = {}  # canonical row key -> evaluation
        self._done: set[int] = set()  # trial numbers already read into the cache
        self._added: dict[str, bytes] = {}  # config key -> row key of added trials not yet numbered

    # --- the study's state -----------------------------------------------------------
    def rows(self, params: Sequence[dict[str, Any]]) -> np.ndarray:
        """Canonical rows of Optuna parameter dicts, canonicalised in one batch."""
        if not params:
            return np.empty((0, self.space.n_genes), dtype=np.int64)
        return self.space.canonical(np.stack([self.space.row_from_params(p) for p in params]))

    def sync(self) -> list[FrozenTrial]:
        """Read new evaluated trials into the cache; return every trial."""
        trials = self.study.get_trials(deepcopy=False)
        fresh = []
        for t in trials:
            if t.number in self._done or t.state != TrialState.COMPLETE:
                continue
            self._done.add(t.number)
            if not t.user_attrs.get(EVALUATED):
                continue
            k = self._added.pop(t.user_attrs.get(KEY), None)
            if k is not None:  # added here: cached already, only its trial number was unknown
                self.cache[k] = self.cache[k]._replace(number=t.number)
            else:
                fresh.append(t)
        for t, row in zip(fresh, self.rows([t.params for t in fresh])):
            k = row_key(row)
            if k not in self.cache:
                values = {m.name: float(v) for m, v in zip(self.objectives, t.values)}
                values.update({n: float(v) for n, v in t.user_attrs.get(METRICS, {}).items()})
                self.cache[k] = _Entry(row, self.space.decode(row), values, t.number)
        return trials

    def in_flight(self, trials: Sequence[FrozenTrial], mine: set[int]) -> dict[bytes, int]:
        """Row keys of other workers' unfinished trials -> their lowest trial number."""
        live, params = [], []
        for t in trials:
            if t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number not in mine:
                p = t.params if t.state == TrialState.RUNNING else t.system_attrs.get("fixed_params", {})
                if len(p) == self.space.n_genes:  # a trial still being asked has no row yet
                    live.append(t.number)
                    params.append(p)
        out: dict[bytes, int] = {}
        for number, row in zip(live, self.rows(params)):
            k = row_key(row)
            out[k] = min(out.get(k, number), number)
        return out

    def claims(self, trials: Sequence[FrozenTrial], mine: set[int]) -> dict[bytes, int]:
        """Row keys that other workers' running trials have claimed -> the claiming trial."""
        live = [t for t in trials if t.state == TrialState.RUNNING and t.number not in mine and t.user_attrs.get(CLAIM)]
        return {row_key(r): t.number for t, r in zip(live, self.rows([t.params for t in live]))}

    def generation_attrs(self, trials: Sequence[FrozenTrial]) -> dict[str, int]:
        """The system attribute that puts a trial added now into the GA generation being asked,
        by the rule of `BaseGASampler.get_trial_generation` (the current generation until it
        holds `population_size` completed trials), so that NSGA-II selects parents among
        added trials too."""
        sampler = self.study.sampler
        if not isinstance(sampler, optuna.samplers.BaseGASampler):
            return {}
        key = sampler._get_generation_key()
        gens = [t.system_attrs.get(key, -1) for t in trials if t.state == TrialState.COMPLETE]
        top = max(0, max(gens, default=0))
        full = sum(g == top for g in gens) >= sampler.population_size
        return {key: top + 1 if full else top}

    # --- evaluation ------------------------------------------------------------------
    def evaluate(self, configs: list[Any]) -> list[dict[str, float]]:
        cols = {name: m(configs).tolist() for name, m in self.metrics.items()}
        return [{name: col[i] for name, col in cols.items()} for i in range(len(configs))]

    def violations(self, values: Sequence[dict[str, float]]) -> list[dict[str, float]]:
        """Each config's constraint values as Optuna takes them (<= 0: met), one array per constraint."""
        cols = {
            c.name: c.violation(np.array([v[c.name] for v in values]), self.metrics[c.name].direction).tolist()
            for c in self.constraints
        }
        return [{name: col[i] for name, col in cols.items()} for i in range(len(values))]

    def user_attrs(self, config: Any, values: dict[str, float], evaluated: bool) -> dict[str, Any]:
        """What `sync` reads back: the config's key, whether this trial evaluated it, and the
        metrics that are not objectives."""
        attrs: dict[str, Any] = {KEY: self.space.key(config), EVALUATED: evaluated}
        if evaluated and self.extra:
            attrs[METRICS] = {n: values[n] for n in self.extra}
        return attrs

    # --- one generation --------------------------------------------------------------
    def add_fixed(self, rows: np.ndarray, origin: str, claimed: dict[bytes, int], system_attrs: dict[str, Any]) -> int:
        """Evaluate our own proposals and add them to the study as completed trials, in one
        batch; called under the claim lock. Rows evaluated or claimed by another worker since
        they were proposed are dropped (they would add nothing). Returns the number added."""
        fresh = {k: r for k, r in ((row_key(r), r) for r in rows) if k not in self.cache and k not in claimed}
        if not fresh:
            return 0
        configs = [self.space.decode(r) for r in fresh.values()]
        values = self.evaluate(configs)
        trials = []
        for (k, row), c, v, viol in zip(fresh.items(), configs, values, self.violations(values)):
            self.cache[k] = _Entry(row, c, v, -1)
            attrs = {ORIGIN: origin, **self.user_attrs(c, v, evaluated=True)}
            self._added[attrs[KEY]] = k
            trials.append(self.completed_trial(row, v, attrs, system_attrs, viol))
        self.study.add_trials(trials)
        return len(trials)

    def completed_trial(
        self,
        row: np.ndarray,
        values: dict[str, float],
        user_attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        violation: dict[str, float],
    ) -> FrozenTrial:
        """A completed trial for `study.add_trials`, its constraints stored as `Trial.set_constraint`
        stores them. Built directly rather than by `optuna.trial.create_trial`, whose conversion
        of every distribution costs more than the rest of adding the trial; `add_trials`
        validates it all the same."""
        now = datetime.now()
        trial = _AddedTrial(
            number=-1,
            trial_id=-1,
            state=TrialState.COMPLETE,
            value=None,
            values=[values[m.name] for m in self.objectives],
            datetime_start=now,
            datetime_complete=now,
            params=self.space.params(row),
            distributions=self.distributions,
            user_attrs=user_attrs,
            system_attrs=dict(system_attrs),
            intermediate_values={},
        )
        for name, v in violation.items():
            trial.set_constraint(name, v)
        return trial

    def claim(
        self, asked: Sequence[optuna.Trial], keys: Sequence[bytes], claimed: dict[bytes, int]
    ) -> tuple[dict[bytes, int], dict[bytes, int]]:
        """Split the asked trials' new configs into those evaluated here (key -> index of the
        asked trial, marked as claimed) and those another worker claimed (key -> its trial)."""
        todo: dict[bytes, int] = {}
        wait: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k in self.cache or k in todo or k in wait:
                continue
            if k in claimed:
                wait[k] = claimed[k]
            else:
                todo[k] = i
                asked[i].set_user_attr(CLAIM, True)
        return todo, wait

    def tell(self, trial: optuna.Trial, entry: _Entry, evaluated: bool, violation: dict[str, float]) -> None:
        for name, v in violation.items():
            trial.set_constraint(name, v)
        for name, v in self.user_attrs(entry.config, entry.values, evaluated).items():
            trial.set_user_attr(name, v)
        self.study.tell(trial, [entry.values[m.name] for m in self.objectives])

    def generation(self, fixed: np.ndarray, origin: str, n_ask: int) -> int:
        """One generation of `n_ask` trials: the `fixed` rows (our proposals), evaluated and
        added as completed trials, then NSGA-II children for the rest, asked and told (in this
        order, as when the rows were enqueued, so that NSGA-II draws the same children; one
        difference: where the added rows fill a GA generation, as in a short last batch, the
        children start the next one). Returns the number of configs evaluated here."""
        # Deciding what to evaluate and claiming it is one critical section across workers,
        # so that two workers never both evaluate a config.
        with self.claim_lock:
            now = self.sync()
            n_added = self.add_fixed(fixed, origin, self.claims(now, set()), self.generation_attrs(now))
        return n_added + self.children(n_ask - n_added)

    def children(self, n: int) -> int:
        """Ask `n` NSGA-II children, evaluate the configs nobody evaluated or claimed, tell all;
        return the number of configs evaluated here."""
        asked: list[optuna.Trial] = []
        told: set[int] = set()
        try:
            for _ in range(n):
                asked.append(self.study.ask(self.distributions))
            mine = {t.number for t in asked}
            rows = self.rows([t.params for t in asked])
            keys = [row_key(r) for r in rows]
            with self.claim_lock:
                now = self.sync()
                todo, wait = self.claim(asked, keys, self.claims(now, mine))
            if todo:
                configs = [self.space.decode(rows[i]) for i in todo.values()]
                for (k, i), c, v in zip(todo.items(), configs, self.evaluate(configs)):
                    self.cache[k] = _Entry(rows[i], c, v, asked[i].number)
            if wait:
                first = {k: keys.index(k) for k in wait}
                for k in self.wait_for(wait, {k: asked[i] for k, i in first.items()}, mine):
                    todo[k] = first[k]
            entries = [self.cache[k] for k in keys]
            violations = self.violations([e.values for e in entries])
            for i, (t, k, e, viol) in enumerate(zip(asked, keys, entries, violations)):
                self.tell(t, e, todo.get(k) == i, viol)
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
                rows = self.space.canonical(np.stack([np.frombuffer(k, dtype=np.int64) for k in take]))
                configs = [self.space.decode(r) for r in rows]
                for k, r, c, v in zip(take, rows, configs, self.evaluate(configs)):
                    self.cache[k] = _Entry(r, c, v, trial_of[k].number)
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
    genes = {g.name: CategoricalDistribution(list(g.choices)) for g in gspace.genes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage_obj,
            study_name=name,
            directions=[m.direction for m in objectives],
            sampler=_make_sampler(sampler, len(objectives), population_size, sampler_seed, genes),
            load_if_exists=True,
        )
    _check_signature(study, signature)

    driver = _Driver(
        gspace, objectives, constraints, metrics, study, sampler, budgets, wait_timeout, storage_obj, genes
    )
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
        fixed, origin = np.empty((0, gspace.n_genes), dtype=np.int64), ""
        if not trials and len(seed_rows):
            fixed, origin = np.unique(gspace.canonical(seed_rows), axis=0)[:n_ask], "seed"
        elif sampler == "refined" and driver.cache:
            entries = list(driver.cache.values())
            rows = np.stack([e.row for e in entries])
            values = {n: np.array([e.values[n] for e in entries]) for n in metrics}
            k = int(round(refine_share * n_ask))
            fixed = propose(gspace, rows, values, metrics, objectives, constraints, budgets, seen, k, rng)
            origin = "refine"
        new = driver.generation(fixed, origin, n_ask)
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
    entries = sorted(driver.cache.values(), key=lambda e: e.number)
    violations = driver.violations([e.values for e in entries])
    evaluations = [
        Evaluation(e.config, driver.space.key(e.config), e.values, all(v <= 0 for v in viol.values()), e.number)
        for e, viol in zip(entries, violations)
    ]
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
