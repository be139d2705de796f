"""Benchmark mode on the NAS-Bench-201 table (real measured data from ../shared/data)."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys

import numpy as np
import pytest

from search.benchmarks.table import load_table, percentile_budgets, score, table_search
from search.objectives import Metric
from search.pareto import hypervolume_2d, non_dominated
from search.problem import Problem, SearchSettings
from search.refine import Refiner

ACC, XEON = "cifar10_acc", "latency_ms_gold_6226"


@functools.cache
def _load(path):
    return load_table(path, [ACC, XEON, "latency_ms_pixel3"])


@pytest.fixture
def table(shared_data):
    return _load(shared_data / "nb201_accuracy_latency.csv")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_front_evaluations_summary_and_plot(shared_data, tmp_path):
    csv_path = shared_data / "nb201_accuracy_latency.csv"
    out = tmp_path / "bench"
    cmd = [
        sys.executable, "-m", "app.search_bench", f"table={csv_path}", f"accuracy={ACC}",
        f"latency={XEON}", "n_trials=150", "seed=1", f"out={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HV ratio" in proc.stdout and "p25" in proc.stdout
    measured = {r["arch"]: (float(r[ACC]), float(r[XEON])) for r in read_csv(csv_path)}

    evaluated = read_csv(out / "evaluated.csv")
    assert len(evaluated) == len({r["arch"] for r in evaluated}) == 150
    for r in evaluated:
        assert (float(r["accuracy"]), float(r["latency"])) == measured[r["arch"]]

    front = read_csv(out / "front.csv")
    assert list(front[0]) == ["arch", "accuracy", "latency"]
    pts = np.array([[float(r["accuracy"]), -float(r["latency"])] for r in front])
    assert non_dominated(pts).all()
    ev_pts = np.array([[float(r["accuracy"]), -float(r["latency"])] for r in evaluated])
    assert non_dominated(ev_pts).sum() == len(front)  # the whole non-dominated set, nothing else

    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["hypervolume_ratio"] <= 1
    assert summary["n_evaluations"] == 150 and summary["space_fingerprint"]
    all_acc = np.array([a for a, _ in measured.values()])
    all_lat = np.array([lat for _, lat in measured.values()])
    for b in summary["budgets"]:
        under = all_lat <= b["limit"]
        assert b["exact_accuracy"] == all_acc[under].max()
        assert b["found_accuracy"] == max(float(r["accuracy"]) for r in evaluated if float(r["latency"]) <= b["limit"])
        assert b["regret"] == pytest.approx(b["exact_accuracy"] - b["found_accuracy"])
        assert b["exact_found"] == (b["regret"] == 0)
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hypervolume_ratio_beats_random_at_equal_budget(table):
    budgets = percentile_budgets(table.values[XEON], [10, 25, 50])
    ratios = {"refined": [], "random": []}
    regrets = {"refined": [], "random": []}
    for seed in range(3):
        for sampler in ratios:
            res = table_search(table, ACC, XEON, SearchSettings(200, 50, seed, sampler=sampler), budgets)
            sc = score(table, ACC, XEON, res, budgets)
            ratios[sampler].append(sc.hypervolume_ratio)
            regrets[sampler].append(sc.mean_regret)
    assert all(0.9 < r <= 1 for r in ratios["refined"])  # a sane ratio (random reaches ~0.95 here)
    assert np.mean(ratios["refined"]) > np.mean(ratios["random"])
    assert np.mean(regrets["refined"]) < np.mean(regrets["random"])


def test_exact_front_scores_one_and_a_subset_scores_less(table):
    acc, lat = table.values[ACC], table.values[XEON]
    pts = np.stack([acc, -lat], axis=1)
    ref = np.array([acc.min(), -lat.max()])
    exact = hypervolume_2d(pts[non_dominated(pts)], ref)
    assert exact == pytest.approx(hypervolume_2d(pts, ref))
    assert hypervolume_2d(pts[::7], ref) < exact


@pytest.mark.parametrize(
    "override, message",
    [
        ("latency=latency_ms_nope", "has no column 'latency_ms_nope'"),
        ("sampler=grid", "sampler = 'grid' is not allowed"),
        ("budget_percentiles=[0,50]", "budget percentile 0.0 is not allowed"),
    ],
)
def test_cli_bad_input_is_one_line(shared_data, tmp_path, override, message):
    cmd = [
        sys.executable, "-m", "app.search_bench", f"table={shared_data / 'nb201_accuracy_latency.csv'}",
        "n_trials=20", f"out={tmp_path}", override,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ValueError:") and message in lines[0]


def test_missing_table_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_table(tmp_path / "none.csv", [ACC])


def test_refinement_work_per_generation_does_not_grow_with_the_search(table):
    """Neighbourhoods computed per generation stay about what the proposals need late in a
    search: sources whose neighbours are all evaluated, or all predicted too far over a
    budget, are not looked at again each generation (they were: 3,000 evaluations into a
    search, ~290 neighbourhoods a generation for 40 proposals, growing with every one)."""
    objectives = [Metric("accuracy", table.lookup(ACC), "maximize"), Metric("latency", table.lookup(XEON), "minimize")]
    problem = Problem.of(table.space, objectives, budgets=percentile_budgets(table.values[XEON], [10, 25, 50]))
    space, rng, k = problem.space, np.random.default_rng(0), 40
    refiner, seen, per_generation = Refiner(problem), set(), []
    while refiner.n < 4000:
        calls = refiner.neighbour_calls
        out = refiner.propose(set(), k, np.random.default_rng([0, refiner.n])) if refiner.n else []
        rows = [r for r in [*out, *space.random_rows(10, rng)] if r.tobytes() not in seen]
        seen.update(r.tobytes() for r in rows)
        configs = [space.decode(r) for r in rows]
        refiner.add(np.array(rows), {name: m(configs) for name, m in problem.metrics.items()})
        per_generation.append(refiner.neighbour_calls - calls)
    late = per_generation[-len(per_generation) // 3 :]
    assert np.mean(late) <= 2 * k
