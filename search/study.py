"""The Optuna side of a search: its study, its sampler, and the trials the engine adds.

Only Optuna's public API is used here (a test checks it): samplers through the
`BaseSampler` hooks and the public `BaseGASampler` methods, trials through `study.ask` /
`tell` / `add_trials`, attributes through user attributes and `set_constraint`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseGASampler, BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.problem import Problem, SearchSettings
from search.refine import row_key
from search.storage import open_storage


class KnownSpaceSampler(BaseSampler):
    """Optuna's `NSGAIISampler` (`NSGAIIISampler` for three or more objectives), delegated to,
    with the run's genes as its search space.

    Optuna's GA samplers infer the relative search space for every asked trial by
    intersecting the distributions of the trials completed since the last ask and copying the
    result: about half the cost of asking a 46-gene trial. Every trial of a study carries the
    same genes (its signature is checked), so the intersection is known: the genes with more
    than one choice, in name order as the intersection gives them (NSGA-II draws per gene in
    that order). The GA itself (generations, parents, children, its random draws) is
    Optuna's, unchanged; `ga` is that sampler."""

    def __init__(self, ga: BaseGASampler, genes: dict[str, BaseDistribution]) -> None:
        self.ga = ga
        self._genes = {n: d for n, d in sorted(genes.items()) if not d.single()}

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._genes)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.ga.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.ga.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.ga.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.ga.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.ga.reseed_rng()


class _GenerationsOnce:
    """Optuna's GA bookkeeping with the two reads that scan every trial of the study done once.

    - `get_parent_population`: a generation's parents are selected once and stored in the
      study (Optuna's own cache), then read back by scanning every trial, once per asked
      child. They never change, so they are kept for the generation last asked about and
      returned again, in the order Optuna reads them back (by trial number; the call that
      selects them returns them in selection order). (Two workers that select the parents
      of one generation at the same instant each keep their own; Optuna itself then uses
      its own selection for that child and the stored one after.)
    - `get_population` of the generation before the current one (read once per generation
      to select parents) scans every trial; with `single_process` (the study lives in this
      process's memory) it is taken when the first trial of the next generation is given
      its generation, from Optuna's cache of the latest generation: no trial is running then
      (each generation is told before the next is asked), so it is the same list.
    The classes are named as Optuna's, whose keys in the study are derived from the class
    name: studies stay readable by (and resumable from) the stock samplers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.single_process = False
        self._parents_of: tuple[int, int, list[FrozenTrial]] | None = None  # (study id, generation, parents)
        self._population_of: tuple[int, int, list[FrozenTrial]] | None = None

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        key = (id(study), generation)
        if self._parents_of is not None and self._parents_of[:2] == key:
            return list(self._parents_of[2])
        parents = super().get_parent_population(study, generation)
        if parents:
            self._parents_of = (*key, sorted(parents, key=lambda t: t.number))
        return parents

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        generation = super().get_trial_generation(study, trial)
        key = (id(study), generation - 1)
        if self.single_process and generation > 0 and (self._population_of or (0, 0))[:2] != key:
            population = super().get_population(study, generation - 1)
            self._population_of = (*key, sorted(population, key=lambda t: t.number))
        return generation

    def get_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        if self._population_of is not None and self._population_of[:2] == (id(study), generation):
            return list(self._population_of[2])
        return super().get_population(study, generation)


class NSGAIISampler(_GenerationsOnce, optuna.samplers.NSGAIISampler):
    """Optuna's `NSGAIISampler`, reading its parents and populations once (`_GenerationsOnce`)."""


class NSGAIIISampler(_GenerationsOnce, optuna.samplers.NSGAIIISampler):
    """Optuna's `NSGAIIISampler`, reading its parents and populations once (`_GenerationsOnce`)."""


def make_sampler(
    name: str, n_objectives: int, population_size: int, seed: int, genes: dict[str, BaseDistribution]
) -> BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    ga = NSGAIIISampler if n_objectives >= 3 else NSGAIISampler
    return KnownSpaceSampler(ga(population_size=population_size, seed=seed), genes)


def ga_of(sampler: BaseSampler) -> BaseGASampler | None:
    """The genetic-algorithm sampler behind a study's sampler, if any."""
    if isinstance(sampler, KnownSpaceSampler):
        return sampler.ga
    return sampler if isinstance(sampler, BaseGASampler) else None


def signature(problem: Problem, device: str | None = None) -> dict[str, Any]:
    """What a stored study must have been made for (stored as the study's user attributes)."""
    sig = {
        "space_fingerprint": problem.space.fingerprint(),
        "space": problem.space.name,
        "objectives": [[m.name, m.direction] for m in problem.objectives],
        "constraints": [[c.name, c.limit] for c in problem.constraints],
    }
    return sig if device is None else {**sig, "device": device}


def default_study_name(problem: Problem, device: str | None = None) -> str:
    """`search-[<device>-]<space fingerprint>-<objectives>`: one study per device and space."""
    objectives = "-".join(m.name for m in problem.objectives)
    return "-".join(["search", *([device] if device else []), problem.space.fingerprint(), objectives])


def check_signature(study: optuna.Study, expected: dict[str, Any]) -> None:
    stored = study.user_attrs
    if not stored:
        for k, v in expected.items():
            study.set_user_attr(k, v)
        return
    for k, v in expected.items():
        if k in stored and stored[k] != v:
            what = "search space" if k.startswith("space") else k
            raise ValueError(
                f"study {study.study_name!r} in this storage was made for another {what}: "
                f"stored {k} = {stored[k]!r}, this search has {v!r}; use another study_name or storage"
            )


def genes_of(problem: Problem) -> dict[str, BaseDistribution]:
    return {g.name: CategoricalDistribution(list(g.choices)) for g in problem.space.genes}


def open_study(
    problem: Problem, settings: SearchSettings, genes: dict[str, BaseDistribution]
) -> tuple[optuna.Study, BaseStorage | None]:
    """Create the study, or load a stored one of the same name (its signature checked)."""
    sig = signature(problem, settings.device)
    name = settings.study_name or default_study_name(problem, settings.device)
    storage = open_storage(settings.storage)
    # The sampler's seed also depends on how many trials the study already holds, so that a
    # resumed study (or a second worker) does not replay the first run's random draws.
    exists = storage is not None and name in {s.study_name for s in storage.get_all_studies()}
    n_before = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)) if exists else 0
    seed = settings.seed if n_before == 0 else int(np.random.default_rng([settings.seed, n_before]).integers(2**31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # NSGAIIISampler's
        sampler = make_sampler(settings.sampler, len(problem.objectives), settings.population_size, seed, genes)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=[m.direction for m in problem.objectives],
            sampler=sampler,
            load_if_exists=True,
        )
    ga = ga_of(study.sampler)
    if isinstance(ga, _GenerationsOnce):
        ga.single_process = storage is None
    check_signature(study, sig)
    return study, storage


class SharedDistributions(dict):
    """The distributions of every trial the engine adds: one dict, copied shallowly.

    The in-memory storage deep-copies every added trial; copying 46 distributions is most of
    the cost of adding one. Distributions are immutable values (Optuna's `set_trial_param`
    stores the caller's object as is), so a copy may share them."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedDistributions:
        return SharedDistributions(self)


def running_trial(
    params: dict[str, Any], distributions: SharedDistributions, user_attrs: dict[str, Any]
) -> FrozenTrial:
    """A running trial to add with `study.add_trials`, told once it joined its GA generation.

    Built with `FrozenTrial` rather than `optuna.trial.create_trial`, which converts every
    distribution (and drops the shared dict); `add_trials` validates it all the same."""
    return FrozenTrial(
        number=-1,
        trial_id=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params=params,
        distributions=distributions,
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={},
    )


@contextmanager
def failing_unless_told(study: optuna.Study, numbers: list[int]) -> Iterator[set[int]]:
    """Yield a set to record told trial numbers in; trials of `numbers` (a list the block may
    extend) left untold at the end (an evaluation raised) are told failed, so that no trial
    stays running."""
    told: set[int] = set()
    try:
        yield told
    finally:
        for n in numbers:
            if n not in told:
                study.tell(n, state=TrialState.FAIL, skip_if_finished=True)


KEY, EVALUATED, ORIGIN, METRICS, CLAIM = "key", "evaluated", "origin", "metrics", "claim"


class Entry(NamedTuple):
    """One evaluated config of the cache."""

    row: np.ndarray  # canonical gene row
    config: Any
    values: dict[str, float]
    number: int  # the trial that evaluated it


class StudyCache:
    """The configs evaluated in a study, read back from its trials (this worker's, another
    worker's, or a stored study's), and the trials other workers are running."""

    def __init__(self, problem: Problem, study: optuna.Study) -> None:
        self.problem, self.study, self.space = problem, study, problem.space
        self.cache: dict[bytes, Entry] = {}  # canonical row key -> evaluation
        self._done: set[int] = set()  # trial numbers already read into the cache
        self._scan = 0  # every trial before this position of the study's list is finished and read

    def rows(self, params: Sequence[dict[str, Any]]) -> np.ndarray:
        """Canonical rows of Optuna parameter dicts, canonicalised in one batch."""
        if not params:
            return np.empty((0, self.space.n_genes), dtype=np.int64)
        return self.space.canonical(np.stack([self.space.row_from_params(p) for p in params]))

    def remember(self, entries: Sequence[Entry]) -> None:
        """Put new evaluations into the cache."""
        for e in entries:
            self.cache[row_key(e.row)] = e

    def sync(self) -> list[FrozenTrial]:
        """Read new evaluated trials (another worker's, or a stored study's) into the cache;
        return every trial. Only the trials from the first unfinished one on are looked at,
        so that a generation's bookkeeping does not grow with the study."""
        trials = self.study.get_trials(deepcopy=False)
        fresh = []
        for t in trials[self._scan :]:
            if t.number in self._done or t.state != TrialState.COMPLETE:
                continue
            self._done.add(t.number)
            if t.user_attrs.get(EVALUATED):
                fresh.append(t)
        while self._scan < len(trials) and trials[self._scan].state.is_finished():
            self._scan += 1
        new: dict[bytes, Entry] = {}
        for t, row in zip(fresh, self.rows([t.params for t in fresh])):
            k = row_key(row)
            if k not in self.cache and k not in new:
                values = {m.name: float(v) for m, v in zip(self.problem.objectives, t.values)}
                values.update({n: float(v) for n, v in t.user_attrs.get(METRICS, {}).items()})
                new[k] = Entry(row, self.space.decode(row), values, t.number)
        self.remember(list(new.values()))
        return trials

    def live(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The running trials (all lie from the first unfinished one on)."""
        return [t for t in trials[self._scan :] if t.state == TrialState.RUNNING]

    def in_flight(self, trials: Sequence[FrozenTrial]) -> dict[bytes, int]:
        """Row keys of other workers' running trials -> their lowest trial number."""
        # A trial still being asked has no full row yet.
        live = [t for t in self.live(trials) if len(t.params) == self.space.n_genes]
        out: dict[bytes, int] = {}
        for t, row in zip(live, self.rows([t.params for t in live])):
            k = row_key(row)
            if k not in self.cache:
                out[k] = min(out.get(k, t.number), t.number)
        return out

    def claims(self, trials: Sequence[FrozenTrial], mine: set[int]) -> dict[bytes, int]:
        """Row keys that other workers' running trials have claimed -> the claiming trial."""
        live = [t for t in self.live(trials) if t.number not in mine and t.user_attrs.get(CLAIM)]
        return {row_key(r): t.number for t, r in zip(live, self.rows([t.params for t in live]))}
