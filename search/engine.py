"""The search driver: an Optuna study filled in generation-sized batches.

Each generation holds `population_size` trials of one study: refinement moves
(`search.refine`) and children of Optuna's `NSGAIISampler` (`NSGAIIISampler` for three or
more objectives; `search.study.KnownSpaceSampler`). Refinement moves (and the seed configs
of a fresh study) are our own proposals: they are evaluated directly, added to the study
with `study.add_trials` as running trials with their parameters and constraints, placed in
the GA generation being filled by the sampler's public `get_trial_generation`, and told, so
that NSGA-II selects parents among them as among its own children. Only the children go
through `study.ask`, which costs Optuna a few milliseconds per 46-gene trial (adding costs a
fraction of that). Configs not seen before are evaluated in one vectorised call per metric;
a child that repeats a config is answered from the cache; only distinct configs count
towards `n_trials`.

The study lives in memory by default, or in any Optuna storage (`sqlite:///search.db`, a
journal file `search.log`): a run against an existing study resumes it without
re-evaluating a stored config, and several processes can work on one study. A worker marks
the asked trials whose configs it evaluates with the `claim` user attribute; another worker
that draws a claimed config waits for its values instead of evaluating it twice. Every trial
names its worker: the running trials of a dead worker (killed, crashed) are told failed by
the next worker that looks (`search.storage.StaleTrials`) and their configs evaluated again,
so an interrupted search resumes to exactly `n_trials` distinct evaluated configs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ofa.space import MBV3Space
from search.genes import GeneSpace
from search.objectives import Budget, Constraint, Metric
from search.pareto import non_dominated
from search.problem import Problem, SearchSettings
from search.refine import Refiner, row_key
from search.result import Evaluation, SearchResult
from search.storage import WORKER, Heartbeat, StaleTrials, claim_lock, sync, worker_id
from search.study import (
    CLAIM,
    EVALUATED,
    KEY,
    METRICS,
    ORIGIN,
    Entry,
    SharedDistributions,
    StudyCache,
    failing_unless_told,
    ga_of,
    genes_of,
    open_study,
    running_trial,
)

STALL_GENERATIONS = 50  # stop when this many generations in a row bring no new config
POLL_S = 0.05  # how often a worker looks again at what other workers are evaluating

Progress = Callable[[int, int], None]


class _Driver(StudyCache):
    """State of one `run` call: the study, the cache of evaluated configs, the proposals."""

    def __init__(
        self,
        problem: Problem,
        settings: SearchSettings,
        study: optuna.Study,
        storage: BaseStorage | None,
        distributions: SharedDistributions,
    ) -> None:
        super().__init__(problem, study)
        self.settings, self.storage = settings, storage
        self.claim_lock = claim_lock(storage)
        # One set of distribution objects for every trial (asked or added) and the sampler.
        self.distributions = distributions
        self.extra = [n for n in problem.metrics if n not in {m.name for m in problem.objectives}]
        self.refiner = Refiner(problem) if settings.sampler == "refined" else None
        self.worker = worker_id()
        self.stale = StaleTrials(study, self.worker)
        self.retry: dict[bytes, np.ndarray] = {}  # configs of dead workers' trials, to evaluate again

    # --- the study's state ---
    def remember(self, entries: Sequence[Entry]) -> None:
        """Put new evaluations into the cache (and the refiner's table, in the same order)."""
        super().remember(entries)
        if self.refiner is not None and entries:
            names = self.problem.metrics
            self.refiner.add(np.stack([e.row for e in entries]), {n: [e.values[n] for e in entries] for n in names})

    def reap(self, trials: Sequence[FrozenTrial]) -> bool:
        """Fail the running trials of dead workers (`search.storage.StaleTrials`); their configs
        are evaluated again first (`retry`). Returns whether any trial was failed."""
        dead = self.stale.dead(self.live(trials))
        for row in self.rows([t.params for t in dead if len(t.params) == self.space.n_genes]):
            self.retry.setdefault(row_key(row), row)
        self.stale.fail(dead)
        return bool(dead)

    # --- evaluation ------------------------------------------------------------------
    def user_attrs(self, config: Any, values: dict[str, float], evaluated: bool) -> dict[str, Any]:
        """What `sync` reads back: the config's key, whether this trial evaluated it, and the
        metrics that are not objectives."""
        attrs: dict[str, Any] = {KEY: self.space.key(config), EVALUATED: evaluated}
        if evaluated and self.extra:
            attrs[METRICS] = {n: values[n] for n in self.extra}
        return attrs

    def objective_values(self, values: dict[str, float]) -> list[float]:
        return [values[m.name] for m in self.problem.objectives]

    # --- one generation --------------------------------------------------------------
    def generation(self, fixed: np.ndarray, origin: str, n_ask: int) -> int:
        """One generation of `n_ask` trials: the `fixed` rows (our proposals), evaluated and
        added, then NSGA-II children for the rest, asked and told (in this order, so that
        NSGA-II draws the same children as when the rows were enqueued; one difference: where
        the added rows fill a GA generation, as in a short last batch, the children start the
        next one). Returns the number of configs evaluated here."""
        # Deciding what to evaluate and claiming it is one critical section across workers,
        # so that two workers never both evaluate a config.
        with self.claim_lock:
            n_added = self.add_fixed(fixed, origin, self.claims(self.sync(), set()))
        return n_added + self.children(n_ask - n_added)

    def add_fixed(self, rows: np.ndarray, origin: str, claimed: dict[bytes, int]) -> int:
        """Evaluate our own proposals and add them to the study; called under the claim lock.
        Rows evaluated or claimed by another worker since they were proposed are dropped
        (they would add nothing). Returns the number added."""
        fresh = {k: r for k, r in ((row_key(r), r) for r in rows) if k not in self.cache and k not in claimed}
        if not fresh:
            return 0
        configs = [self.space.decode(r) for r in fresh.values()]
        values = self.problem.evaluate(configs)
        pending, templates = {}, []
        for row, c, v, viol in zip(fresh.values(), configs, values, self.problem.violations(values)):
            attrs = {ORIGIN: origin, WORKER: self.worker, **self.user_attrs(c, v, evaluated=True)}
            template = running_trial(self.space.params(row), self.distributions, attrs)
            for name, x in viol.items():
                template.set_constraint(name, x)
            templates.append(template)
            pending[attrs[KEY]] = Entry(row, c, v, -1)
        n_before = len(self.study.get_trials(deepcopy=False))
        self.study.add_trials(templates)
        added = [
            t
            for t in self.study.get_trials(deepcopy=False)[n_before:]
            if t.state == TrialState.RUNNING and t.user_attrs.get(ORIGIN) == origin and t.user_attrs.get(KEY) in pending
        ]
        self.tell_added(added, pending)
        return len(added)

    def tell_added(self, added: Sequence[FrozenTrial], pending: dict[str, Entry]) -> None:
        """Put the added running trials into the GA generation being filled, then tell them.
        All join before any is told: the generation counts only completed trials, so they
        all join the same one, as the children asked next do."""
        ga = ga_of(self.study.sampler)
        with failing_unless_told(self.study, [t.number for t in added]) as told:
            if ga is not None:
                for t in added:
                    ga.get_trial_generation(self.study, t)
            for t in added:
                entry = pending[t.user_attrs[KEY]]._replace(number=t.number)
                self.remember([entry])
                self.study.tell(t.number, self.objective_values(entry.values))
                self._done.add(t.number)
                told.add(t.number)

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

    def tell(self, trial: optuna.Trial, entry: Entry, evaluated: bool, violation: dict[str, float]) -> None:
        for name, v in violation.items():
            trial.set_constraint(name, v)
        for name, v in self.user_attrs(entry.config, entry.values, evaluated).items():
            trial.set_user_attr(name, v)
        self.study.tell(trial, self.objective_values(entry.values))

    def children(self, n: int) -> int:
        """Ask `n` NSGA-II children, evaluate the configs nobody evaluated or claimed, tell all;
        return the number of configs evaluated here."""
        asked: list[optuna.Trial] = []
        numbers: list[int] = []
        with failing_unless_told(self.study, numbers) as told:
            for _ in range(n):
                asked.append(self.study.ask(self.distributions))
                numbers.append(asked[-1].number)
                asked[-1].set_user_attr(WORKER, self.worker)
            mine = {t.number for t in asked}
            rows = self.rows([t.params for t in asked])
            keys = [row_key(r) for r in rows]
            with self.claim_lock:
                todo, wait = self.claim(asked, keys, self.claims(self.sync(), mine))
            self.put(rows[list(todo.values())], [asked[i].number for i in todo.values()])
            if wait:
                first = {k: keys.index(k) for k in wait}
                for k in self.wait_for(wait, {k: asked[i] for k, i in first.items()}, mine):
                    todo[k] = first[k]
            entries = [self.cache[k] for k in keys]
            violations = self.problem.violations([e.values for e in entries])
            for i, (t, k, e, viol) in enumerate(zip(asked, keys, entries, violations)):
                self.tell(t, e, todo.get(k) == i, viol)
                self._done.add(t.number)
                told.add(t.number)
            return len(todo)

    def put(self, rows: np.ndarray, numbers: Sequence[int]) -> None:
        """Evaluate canonical `rows` in one batch into the cache, evaluated by trials `numbers`."""
        if len(numbers):
            configs = [self.space.decode(r) for r in rows]
            values = self.problem.evaluate(configs)
            self.remember([Entry(r, c, v, n) for r, c, v, n in zip(rows, configs, values, numbers)])

    def wait_for(self, wait: dict[bytes, int], trial_of: dict[bytes, optuna.Trial], mine: set[int]) -> set[bytes]:
        """Wait until other workers have evaluated the configs they claimed. A config whose
        claiming trial failed, or that takes longer than `wait_timeout`, is claimed and
        evaluated here (through `trial_of[key]`). Returns the keys evaluated here."""
        deadline = time.monotonic() + self.settings.wait_timeout
        pending, taken = dict(wait), set()
        while True:
            if self.reap(self.sync()):
                self.sync()
            pending = {k: n for k, n in pending.items() if k not in self.cache}
            if not pending:
                return taken
            expired = time.monotonic() > deadline
            take = []
            with self.claim_lock:
                claimed = self.claims(self.sync(), mine)
                for k in list(pending):
                    if k in self.cache:
                        pending.pop(k)
                    elif expired or k not in claimed:  # its claim failed (or is stuck): take it over
                        trial_of[k].set_user_attr(CLAIM, True)
                        take.append(k)
            if take:
                rows = self.space.canonical(np.stack([np.frombuffer(k, dtype=np.int64) for k in take]))
                self.put(rows, [trial_of[k].number for k in take])
                taken.update(take)
                for k in take:
                    pending.pop(k)
            elif pending:
                time.sleep(POLL_S)


def run(
    space: GeneSpace | MBV3Space,
    objectives: Sequence[Metric],
    settings: SearchSettings,
    *,
    constraints: Sequence[Constraint] = (),
    budgets: Sequence[Budget] = (),
    seeds: Sequence[Any] | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """Search `space` for configs good in every objective under `constraints`.

    `objectives` are `Metric`s (batched callables with a direction); `settings` says how
    many distinct configs to evaluate, the generation size, the seed, the sampler and where
    the study lives (`SearchSettings`). `budgets` focus refinement (`search.refine`) on the
    best arch under each budget. `seeds`: configs evaluated first (default for "refined": the
    space's smallest and largest). `progress(done, total)` is called once per generation.
    """
    problem = Problem.of(space, objectives, constraints, budgets)
    gspace = problem.space
    if seeds is None and settings.sampler == "refined":
        seeds = gspace.default_seeds()
    seed_rows = np.stack([gspace.encode(c) for c in seeds]) if seeds else np.empty((0, gspace.n_genes), np.int64)
    distributions = SharedDistributions(genes_of(problem))
    study, storage = open_study(problem, settings, distributions)
    driver = _Driver(problem, settings, study, storage, distributions)
    with Heartbeat(study, storage, driver.worker):
        trials, stopped = _search(driver, seed_rows, progress)
    return _result(driver, trials, stopped)


def _search(driver: _Driver, seed_rows: np.ndarray, progress: Progress | None) -> tuple[list[FrozenTrial], str]:
    """Generations until `n_trials` distinct configs are evaluated, the space is exhausted, or
    generations stop bringing new configs. What other live workers are evaluating is left to
    them (and waited for); what dead ones were evaluating is evaluated again."""
    settings, space = driver.settings, driver.space
    n_configs = space.n_configs()
    target = min(settings.n_trials, n_configs)
    stall, gen, waiting = 0, 0, None
    trials = driver.sync()
    while True:
        if driver.reap(trials):
            trials = driver.sync()
        n_eval = len(driver.cache)
        if progress is not None:
            progress(min(n_eval, target), target)
        others = driver.in_flight(trials)
        remaining = target - n_eval - len(others)
        if remaining <= 0 < target - n_eval:  # the rest is being evaluated elsewhere: wait for it
            waiting = waiting or time.monotonic()
            if time.monotonic() - waiting <= settings.wait_timeout:
                time.sleep(POLL_S)
                trials = driver.sync()
                continue
            others, remaining = {}, target - n_eval  # stuck elsewhere: search on
        waiting = None
        if remaining <= 0:
            every = f"evaluated every config of the space ({n_configs})"
            stopped = "reached n_trials" if target == settings.n_trials else every
            break
        if stall >= STALL_GENERATIONS:
            stopped = f"no new config in {STALL_GENERATIONS} generations"
            break
        n_ask = min(settings.population_size, remaining)
        fixed, origin = _proposals(driver, trials, seed_rows, set(others), n_ask, gen)
        new = driver.generation(fixed, origin, n_ask)
        sync(driver.storage)
        stall = 0 if new else stall + 1
        gen += 1
        trials = driver.sync()
    if progress is not None:
        progress(min(len(driver.cache), target), target)
    return trials, stopped


def _proposals(
    driver: _Driver, trials: Sequence[FrozenTrial], seed_rows: np.ndarray, busy: set[bytes], n_ask: int, gen: int
) -> tuple[np.ndarray, str]:
    """Our own rows for this generation: the seeds of a fresh study, else refinement moves
    (neither evaluated nor `busy`: in flight elsewhere)."""
    space, settings = driver.space, driver.settings
    if not trials and len(seed_rows):
        return np.unique(space.canonical(seed_rows), axis=0)[:n_ask], "seed"
    if driver.retry:
        keys = list(driver.retry)[:n_ask]
        return np.stack([driver.retry.pop(k) for k in keys]), "retry"
    if driver.refiner is not None and driver.cache:
        k = int(round(settings.refine_share * n_ask))
        rng = np.random.default_rng([settings.seed, len(trials), gen])
        return driver.refiner.propose(busy, k, rng), "refine"
    return np.empty((0, space.n_genes), dtype=np.int64), ""


def _result(driver: _Driver, trials: Sequence[FrozenTrial], stopped: str) -> SearchResult:
    problem = driver.problem
    entries = sorted(driver.cache.values(), key=lambda e: e.number)
    violations = driver.problem.violations([e.values for e in entries])
    evaluations = [
        Evaluation(e.config, problem.space.key(e.config), e.values, all(v <= 0 for v in viol.values()), e.number)
        for e, viol in zip(entries, violations)
    ]
    feasible = [e for e in evaluations if e.feasible]
    front: list[Evaluation] = []
    if feasible:
        pts = np.array([[m.sign * e.values[m.name] for m in problem.objectives] for e in feasible])
        front = [e for e, keep in zip(feasible, non_dominated(pts)) if keep]
        front.sort(key=lambda e: [-m.sign * e.values[m.name] for m in problem.objectives])
    return SearchResult(
        space=problem.space,
        objectives=problem.objectives,
        constraints=problem.constraints,
        evaluations=evaluations,
        front=front,
        n_trials=len(trials),
        study_name=driver.study.study_name,
        sampler=driver.settings.sampler,
        stopped=stopped,
        metrics=dict(problem.metrics),
    )
