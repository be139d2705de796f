"""The search engine on OFA-MobileNetV3 with real analytic objectives (params, MACs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import optuna
import pytest

import search
import search.study
from ofa.networks import count_macs, count_params
from ofa.space import SPACES, MBV3Space
from search.objectives import Budget, Constraint, Metric, mbv3_macs, mbv3_params
from search.pareto import non_dominated
from search.problem import SearchSettings
from search.select import NoFeasibleArch, raise_for_unmet, select_for_budgets

SPACE = SPACES["ofa_mbv3_mnist"]


@pytest.fixture(autouse=True)
def quiet_optuna():
    """The library does not touch logging (the app layer quiets Optuna): do it here, as the app does."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


class Recorder:
    """Wraps a real metric function and records every config it is asked for."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, archs):
        self.calls.extend(archs)
        return self.fn(archs)


def objectives(space: MBV3Space = SPACE, recorder: Recorder | None = None) -> list[Metric]:
    """Capacity (parameters, up) against cost (MACs, down): the largest net under a budget."""
    params = mbv3_params(space, direction="maximize")
    if recorder is not None:
        recorder.fn = params.fn
        params = Metric("params", recorder, "maximize")
    return [params, mbv3_macs(space)]


BUDGETS = [
    Budget.of("macs<=25M", macs=25e6),
    Budget.of("macs<=40M", macs=40e6),
    Budget("macs<=60M,params>=3M", (Constraint("macs", 60e6), Constraint("params", 3e6))),
]


def test_every_selected_arch_meets_its_budget_and_is_the_best_evaluated():
    result = search.run(SPACE, objectives(), SearchSettings(200, 40, 0), budgets=BUDGETS)
    assert result.n_evaluations == 200 and result.stopped == "reached n_trials"
    choices = select_for_budgets(result, BUDGETS)
    assert [c.budget for c in choices] == BUDGETS
    for c in choices:
        assert c.ok, c.message
        arch = SPACE.validate(c.evaluation.config)
        macs, params = count_macs(SPACE, arch), count_params(SPACE, arch)
        assert (c.evaluation.values["macs"], c.evaluation.values["params"]) == (macs, params)
        for limit in c.budget.constraints:
            value = {"macs": macs, "params": params}[limit.name]
            assert value <= limit.limit if limit.name == "macs" else value >= limit.limit
        # no evaluated arch that meets the budget has more parameters (ties: fewer MACs)
        limits = c.budget.limits()
        meets = [
            e
            for e in result.evaluations
            if e.values["macs"] <= limits["macs"] and e.values["params"] >= limits.get("params", 0)
        ]
        best = max(meets, key=lambda e: (e.values["params"], -e.values["macs"]))
        assert c.evaluation.key == best.key
    # the front is feasible, non-dominated and drawn from the evaluations
    keys = {e.key for e in result.evaluations}
    pts = np.array([[e.values["params"], -e.values["macs"]] for e in result.front])
    assert non_dominated(pts).all() and {e.key for e in result.front} <= keys


def test_budget_refinement_beats_plain_nsga2_at_equal_evaluations():
    """Per-budget sample efficiency: the largest net under tight MACs budgets, 150 evaluations."""
    budgets = [Budget.of("20M", macs=20e6), Budget.of("30M", macs=30e6)]
    gaps = {}
    for sampler in ("refined", "nsga2"):
        best = []
        for seed in range(2):
            res = search.run(SPACE, objectives(), SearchSettings(150, 30, seed, sampler=sampler), budgets=budgets)
            # a budget left unmet scores 0 parameters
            best.append([c.evaluation.values["params"] if c.ok else 0 for c in select_for_budgets(res, budgets)])
        gaps[sampler] = np.mean(best)
    assert gaps["refined"] > gaps["nsga2"]


def test_impossible_budget_ends_with_a_clear_message_naming_the_closest_arch():
    budgets = [Budget.of("tiny", macs=1000), Budget.of("ok", macs=40e6)]
    result = search.run(SPACE, objectives(), SearchSettings(80, 20, 0), budgets=budgets)
    tiny, ok = select_for_budgets(result, budgets)
    assert ok.ok and not tiny.ok and tiny.evaluation is None
    fewest = min(result.evaluations, key=lambda e: e.values["macs"])
    assert tiny.closest.values["macs"] == fewest.values["macs"]
    assert "none of the 80 evaluated archs meets it" in tiny.message
    assert tiny.closest.key in tiny.message and "macs" in tiny.message and "vs limit 1,000" in tiny.message
    with pytest.raises(NoFeasibleArch, match="budget 'tiny'.*closest: ks"):
        raise_for_unmet([tiny, ok])
    raise_for_unmet([ok])  # nothing to say when every budget is met


def test_run_constraints_are_recorded_for_optuna_and_respected_by_the_front():
    cap = Constraint("macs", 35e6)
    result = search.run(SPACE, objectives(), SearchSettings(100, 25, 1), constraints=[cap])
    assert result.front and all(e.values["macs"] <= 35e6 for e in result.front)
    assert all(e.feasible == (e.values["macs"] <= 35e6) for e in result.evaluations)


def test_a_space_smaller_than_n_trials_ends_without_hanging():
    tiny = MBV3Space(
        in_channels=1,
        num_classes=10,
        kernel_sizes=(3,),
        expand_ratios=(3, 4),
        depths=(1, 2),
        resolutions=(20, 24),
        stem_stride=1,
        stage_widths=(24,),
        stage_strides=(2,),
        stage_activations=("relu",),
        stage_use_se=(False,),
    )
    n = tiny.count_subnets()  # 12 sub-networks
    for sampler in ("refined", "nsga2", "random"):
        result = search.run(tiny, objectives(tiny), SearchSettings(10 * n, 4, 0, sampler=sampler))
        assert result.n_evaluations == n and "every config" in result.stopped


def test_canonical_duplicates_are_evaluated_once():
    rec = Recorder(None)
    result = search.run(SPACE, objectives(recorder=rec), SearchSettings(150, 30, 3, sampler="nsga2"))
    keys = [a.key() for a in rec.calls]
    assert len(keys) == len(set(keys)) == result.n_evaluations == 150
    # NSGA-II proposed repeats (in genes or in canonical form) that were answered from the cache
    assert result.n_trials > 150


def test_same_seed_same_search_other_seed_other_search():
    runs = [search.run(SPACE, objectives(), SearchSettings(120, 30, s), budgets=BUDGETS[:1]) for s in (5, 5, 6)]
    rows = [[(e.key, e.values["macs"], e.trial) for e in r.evaluations] for r in runs]
    assert rows[0] == rows[1]
    assert rows[0] != rows[2]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_study_resumed_from_storage_continues_without_repeating_evaluations(tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.log")
    first_rec, second_rec = Recorder(None), Recorder(None)
    n1, n2 = (30, 55) if kind == "sqlite" else (60, 130)  # Optuna's RDB storage is slow per write
    at = lambda n: SearchSettings(n, 20, 0, storage=storage)  # noqa: E731
    first = search.run(SPACE, objectives(recorder=first_rec), at(n1), budgets=BUDGETS[:1])
    second = search.run(SPACE, objectives(recorder=second_rec), at(n2), budgets=BUDGETS[:1])
    assert first.n_evaluations == n1 and second.n_evaluations == n2
    assert second.n_trials > first.n_trials
    before = {a.key() for a in first_rec.calls}
    after = [a.key() for a in second_rec.calls]
    assert len(after) == n2 - n1 == len(set(after)) and not before & set(after)
    assert {e.key for e in first.evaluations} <= {e.key for e in second.evaluations}
    # asking again for what is already there evaluates nothing
    third_rec = Recorder(None)
    third = search.run(SPACE, objectives(recorder=third_rec), at(n2))
    assert third_rec.calls == [] and third.n_evaluations == n2


def test_a_stored_study_of_another_space_is_refused(tmp_path):
    storage = str(tmp_path / "s.log")
    search.run(SPACE, objectives(), SearchSettings(20, 10, 0, study_name="shared", storage=storage))
    other = SPACES["ofa_mbv3_cifar"]
    with pytest.raises(ValueError, match="made for another search space"):
        search.run(other, objectives(other), SearchSettings(20, 10, 0, study_name="shared", storage=storage))


WORKER = textwrap.dedent(
    """
    import json, sys
    import search
    from ofa.space import SPACES
    from search.objectives import Budget, Metric, mbv3_macs, mbv3_params

    space = SPACES["ofa_mbv3_mnist"]
    journal, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    params = mbv3_params(space, direction="maximize")
    seen = []

    def recorded(archs):
        seen.extend(a.key() for a in archs)
        return params.fn(archs)

    objectives = [Metric("params", recorded, "maximize"), mbv3_macs(space)]
    budgets = [Budget.of("30M", macs=30e6)]
    settings = search.SearchSettings(240, 20, seed, study_name="two-workers", storage=journal)
    res = search.run(space, objectives, settings, budgets=budgets)
    with open(log, "w") as f:
        json.dump(seen, f)
    print(res.n_evaluations)
    """
)


def test_two_worker_processes_share_one_journal_study(tmp_path):
    journal = tmp_path / "study.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(journal), str(tmp_path / f"w{i}.json"), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    evaluated = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    assert all(evaluated), "both workers evaluated configs"
    every = evaluated[0] + evaluated[1]
    assert len(every) == len(set(every)), "a config was evaluated twice"

    study = optuna.load_study(
        study_name="two-workers",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    trials = study.get_trials(deepcopy=False)
    assert Counter(t.state for t in trials) == Counter({optuna.trial.TrialState.COMPLETE: len(trials)})
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    marked = [t.user_attrs["key"] for t in trials if t.user_attrs.get("evaluated")]
    assert sorted(marked) == sorted(every)
    assert 240 <= len(marked) <= 240 + 2 * 20
    # every trial's stored values are the real metrics of its arch
    genes = search.MBV3Genes(SPACE)
    for t in trials[::17]:
        arch = genes.parse(t.user_attrs["key"])
        assert t.values == [count_params(SPACE, arch), count_macs(SPACE, arch)]


def test_proposals_are_added_as_trials_that_nsga2_reads(tmp_path):
    """Seeds and refinement moves skip ask: Optuna must still see them as told trials of its generations."""
    journal = tmp_path / "s.log"
    settings = SearchSettings(120, 20, 0, storage=str(journal))
    search.run(SPACE, objectives(), settings, constraints=[Constraint("macs", 35e6)], budgets=BUDGETS[:1])
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=None, storage=storage)
    trials = study.get_trials(deepcopy=False)
    origins = Counter(t.user_attrs.get("origin", "child") for t in trials)
    assert origins["seed"] == 2 and origins["refine"] > 0 and origins["child"] > 0
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    genes = search.MBV3Genes(SPACE)
    for t in trials:
        arch = genes.parse(t.user_attrs["key"])
        macs = count_macs(SPACE, arch)
        assert t.values == [count_params(SPACE, arch), macs]
        assert t.constraints == {"macs": pytest.approx((macs - 35e6) / 35e6)}
        assert set(t.params) == {g.name for g in genes.genes}
    # Every trial, added or asked, is in one of NSGA-II's generations (read back through a
    # fresh sampler's public methods), and NSGA-II picked parents among the added trials too.
    nsga2 = optuna.samplers.NSGAIISampler(population_size=20)
    child_generations = set()
    members = []
    for g in range(len(trials)):
        population = nsga2.get_population(study, g)
        if not population:
            break
        members += [t.number for t in population]
        if any("origin" not in t.user_attrs for t in population):
            child_generations.add(g)
    assert sorted(members) == [t.number for t in trials]
    parents = {t.number for g in child_generations for t in nsga2.get_parent_population(study, g)}
    assert parents & {t.number for t in trials if t.user_attrs.get("origin") == "refine"}


def test_the_known_search_space_samples_as_optunas_inferred_one(monkeypatch):
    """The engine tells NSGA-II its genes instead of letting it intersect every trial's: same search."""
    stock = lambda name, n_obj, pop, seed, genes: optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    runs = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(search.study, "make_sampler", stock)
        res = search.run(SPACE, objectives(), SearchSettings(150, 30, 4), budgets=BUDGETS[:1])
        runs.append([(e.key, e.trial) for e in res.evaluations])
    assert runs[0] == runs[1]


def test_a_failing_metric_leaves_no_running_trial_and_the_study_resumes(tmp_path):
    params = mbv3_params(SPACE, direction="maximize")
    calls = []

    def crashing(archs):  # the fourth batch: the children of the second generation
        calls.append(len(archs))
        if len(calls) == 4:
            raise RuntimeError("predictor crashed")
        return params.fn(archs)

    storage = str(tmp_path / "s.log")
    with pytest.raises(RuntimeError, match="predictor crashed"):
        search.run(
            SPACE,
            [Metric("params", crashing, "maximize"), mbv3_macs(SPACE)],
            SearchSettings(100, 20, 0, storage=storage),
        )
    study = optuna.load_study(
        study_name=None, storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    )
    states = Counter(t.state for t in study.get_trials(deepcopy=False))
    assert states[optuna.trial.TrialState.FAIL] > 0 and optuna.trial.TrialState.RUNNING not in states
    assert search.run(SPACE, objectives(), SearchSettings(100, 20, 0, storage=storage)).n_evaluations == 100


def test_three_objectives_use_nsga3():
    depth = Metric("depth", lambda archs: [sum(a.d) for a in archs], "minimize")
    result = search.run(SPACE, [*objectives(), depth], SearchSettings(60, 20, 0, sampler="nsga2"))
    assert result.n_evaluations == 60 and result.front


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "tpe"}, "sampler = 'tpe' is not allowed; allowed: refined, nsga2, random"),
        ({"n_trials": 0}, "n_trials = 0 is not allowed"),
        ({"population_size": 1}, "population_size = 1 is not allowed; allowed: an integer >= 2"),
        ({"seed": 1.5}, "seed = 1.5 is not allowed; allowed: an integer"),
        ({"refine_share": 1.5}, "refine_share = 1.5 is not allowed"),
        ({"constraints": [Constraint("latency", 5.0)]}, "constraint on 'latency': no such metric"),
        ({"budgets": [Budget.of("b", power=5.0)]}, "constraint on 'power': no such metric"),
        ({"storage": "study.txt"}, "storage = 'study.txt' is not allowed"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, message):
    problem = {k: kwargs.pop(k) for k in ("constraints", "budgets") if k in kwargs}
    with pytest.raises(ValueError) as info:
        search.run(SPACE, objectives(), SearchSettings(**{"n_trials": 10, "population_size": 10, **kwargs}), **problem)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_metrics_must_return_one_finite_value_per_config():
    nan = Metric("accuracy", lambda archs: [float("nan")] * len(archs))
    with pytest.raises(ValueError, match="metric 'accuracy' returned nan"):
        search.run(SPACE, [nan, mbv3_macs(SPACE)], SearchSettings(10, 10, 0))
    short = Metric("accuracy", lambda archs: [1.0])
    with pytest.raises(ValueError, match="returned 1 values for"):
        search.run(SPACE, [short, mbv3_macs(SPACE)], SearchSettings(10, 10, 0))
    with pytest.raises(ValueError, match="direction None is not allowed"):
        Metric("score", lambda archs: archs)


@pytest.mark.parametrize(
    "space", [search.MBV3Genes(SPACE), search.MBV3Genes(SPACES["ofa_mbv3_w10"]), search.NB201Genes()]
)
def test_the_refiners_vectorised_neighbours_are_the_spaces(space):
    from search.refine import Neighbours

    neighbours = Neighbours(space)
    for row in space.random_rows(200, np.random.default_rng(0)):
        expected = space.neighbours(row)
        assert neighbours(row).shape == expected.shape and (neighbours(row) == expected).all()
