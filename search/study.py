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
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseGASampler, BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.problem import Problem, SearchSettings
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


def make_sampler(
    name: str, n_objectives: int, population_size: int, seed: int, genes: dict[str, BaseDistribution]
) -> BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    ga = optuna.samplers.NSGAIIISampler if n_objectives >= 3 else optuna.samplers.NSGAIISampler
    return KnownSpaceSampler(ga(population_size=population_size, seed=seed), genes)


def ga_of(sampler: BaseSampler) -> BaseGASampler | None:
    """The genetic-algorithm sampler behind a study's sampler, if any."""
    if isinstance(sampler, KnownSpaceSampler):
        return sampler.ga
    return sampler if isinstance(sampler, BaseGASampler) else None


def signature(problem: Problem) -> dict[str, Any]:
    """What a stored study must have been made for (stored as the study's user attributes)."""
    return {
        "space_fingerprint": problem.space.fingerprint(),
        "space": problem.space.name,
        "objectives": [[m.name, m.direction] for m in problem.objectives],
        "constraints": [[c.name, c.limit] for c in problem.constraints],
    }


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
    sig = signature(problem)
    objective_names = "-".join(m.name for m in problem.objectives)
    name = settings.study_name or f"search-{sig['space_fingerprint']}-{objective_names}"
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
