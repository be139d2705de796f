"""The measurement loop (search.loop) on NAS-Bench-201 behind a pay-per-query oracle (real
measured data from ../shared/data)."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys

import numpy as np
import pytest

from search import nb201
from search.benchmarks.table import (
    QueryBudgetSpent,
    TableOracle,
    load_table,
    loop_search,
    percentile_budgets,
    score,
)
from search.cost_belief import CostBelief, fit_cost
from search.genes import NB201Genes
from search.loop import LoopSettings, LoopSpace, Measurement, _Models, _pick, run_loop
from search.objectives import Budget
from search.pareto import non_dominated
from search.realized import RealizedDiscount

ACC, XEON = "cifar10_acc", "latency_ms_gold_6226"


@functools.cache
def _load(path):
    return load_table(path, [ACC, XEON])


@pytest.fixture
def table(shared_data):
    return _load(shared_data / "nb201_accuracy_latency.csv")


def truth(table, cell):
    i = table.archs.index(cell)
    return float(table.values[ACC][i]), float(table.values[XEON][i])


def test_oracle_counts_distinct_cells_and_refuses_past_its_budget(table):
    oracle = TableOracle(table, ACC, XEON, queries=3)
    a, b, c, d = table.archs[:4]
    first = oracle([a, b, a])  # a repeat in one call costs nothing
    assert oracle.spent == 2 and [f["accuracy"] for f in first] == [truth(table, x)[0] for x in (a, b, a)]
    oracle([b])
    assert oracle.spent == 2
    assert oracle([c])[0]["latency"] == truth(table, c)[1]
    with pytest.raises(QueryBudgetSpent, match="query 4 refused: the budget of 3 queries is spent"):
        oracle([d])
    assert oracle.revealed == [a, b, c] and oracle([a, b, c])  # what was paid for stays readable
    assert [r["arch"] for r in oracle.rows()] == [a, b, c] and [r["query"] for r in oracle.rows()] == [1, 2, 3]
    lookup = TableOracle(table, ACC, XEON, queries=1).lookup("latency")
    assert lookup([a, a]).tolist() == [truth(table, a)[1]] * 2
    with pytest.raises(ValueError, match="queries = 0 is not allowed"):
        TableOracle(table, ACC, XEON, queries=0)


def test_effective_ops_drop_edges_that_cannot_reach_the_output():
    space = NB201Genes()
    # node 1 is fed by nothing (none~0), so its conv into node 3 computes nothing that matters
    dead = space.row_of("|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    twin = space.row_of("|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    eff = nb201.effective_ops(np.stack([dead, twin]))
    assert space.decode(eff[0]) == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert (eff[0] == eff[1]).all() and len(set(nb201.groups(np.stack([dead, twin])))) == 1
    # what a graph compiler prunes: node 2 feeds no output, so its two inputs go; the conv from
    # the unreached node 1 into the output still runs (on zeros)
    pruned = nb201.effective_ops(dead[None], keep_unreached=True)[0]
    assert space.decode(pruned) == "|none~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    unreachable = space.row_of("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|")
    feats = nb201.live_counts(nb201.effective_ops(unreachable[None]))
    assert feats[0, 0] == 0 and feats[0, 1:].sum() == 0  # nothing reaches the output


def test_function_keys_join_cells_that_compute_the_same_function_and_only_those():
    space = NB201Genes()

    def key(cell: str) -> str:
        return nb201.function_keys(space.row_of(cell)[None])[0]

    # one 3x3 conv of the input: on the direct edge, through node 1 or node 2 and a skip, or
    # with dead edges besides
    conv = [
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
        "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|",
        "|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|",
        "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|",
    ]
    assert len({key(c) for c in conv}) == 1
    # nodes 1 and 2 swapped (no edge between them): the same function
    a = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    assert key(a) == key(b)
    # the same sum written as text, but node 1's conv read twice against two convs: different
    shared = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|none~0|skip_connect~1|skip_connect~2|"
    separate = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"
    assert key(shared) != key(separate)
    # a different op or wiring: different
    assert key(conv[0]) != key("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|")
    assert key(a) != key("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|")


def test_path_summary_sees_through_skips_and_node_order():
    space = NB201Genes()

    def summary(cell: str) -> list[float]:
        return nb201.path_summary(nb201.effective_ops(space.row_of(cell)[None]))[0].tolist()

    direct = "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    through_skip = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"
    # one live path holding one conv; no residual; no pool; the shallowest path has one conv
    assert summary(direct) == summary(through_skip) == [0, 0, 1, 0, 0, 0, 1]
    residual = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    # x + conv(conv(x)): the identity path, and a path of two convs
    assert summary(residual) == [1, 1, 0, 1, 0, 0, 0]
    a = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    assert summary(a) == summary(b)
    assert summary("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") == [0, 0, 0, 0, 0, 0, -1]


DEVICES = ["latency_ms_gold_6226", "latency_ms_titan_rtx_1", "latency_ms_pixel3", "latency_ms_raspi4"]


@functools.cache
def _hundred_measured(path):
    """The table with every device column, each cell's op row, 100 cells a loop would have
    measured (random, seed 0) and the other 15,525."""
    data = load_table(path, [ACC, *DEVICES])
    rows = np.stack([data.space.row_of(c) for c in data.archs])
    seen = np.random.default_rng(0).choice(len(rows), 100, replace=False)
    return data, rows, seen, np.setdiff1d(np.arange(len(rows)), seen)


def test_op_counts_fit_latency_from_a_hundred_cells_better_than_the_per_edge_encoding(shared_data):
    # What the loop's cost model sees: 100 measured cells, a ridge on the latency. The counts as
    # written and as reaching the output generalise to the other 15,525 cells; one column per
    # edge and op cannot from so few (on every device column of the table).
    from sklearn.linear_model import Ridge

    data, rows, seen, rest = _hundred_measured(shared_data / "nb201_accuracy_latency.csv")
    for column in DEVICES:
        latency = data.values[column]
        errors = {}
        for name, features in (("counts", nb201.cost_features(rows)), ("edges", nb201.edge_features(rows))):
            predicted = Ridge(alpha=1.0).fit(features[seen], latency[seen]).predict(features[rest])
            errors[name] = np.median(np.abs(np.log(np.maximum(predicted, 1e-3) / latency[rest])))
        assert errors["counts"] < 0.8 * errors["edges"], (column, errors)


def test_cost_belief_from_its_misses_says_how_often_a_cell_predicted_over_meets_the_budget(shared_data):
    # Phones run some cells of one kind a quarter faster than the rest: the cost model's misses
    # have long tails. From 100 measured cells, among the other cells predicted over a budget,
    # the share that meets it is what the misses' own law says (within 2x); a normal law with
    # the misses' robust spread says far less.
    data, rows, seen, rest = _hundred_measured(shared_data / "nb201_accuracy_latency.csv")
    for column in ["latency_ms_pixel3", "latency_ms_raspi4"]:
        latency = data.values[column]
        belief = fit_cost(nb201.cost_features(rows), seen, latency[seen], seed=0)
        normal = CostBelief(belief.predicted, belief.spread, belief.transform)
        off = {"misses": [], "normal": []}
        for q in (10, 25, 50):
            limit = float(np.percentile(latency, q))
            over = rest[belief.predicted[rest] > belief.transform(limit)]
            met = np.mean(latency[over] <= limit)
            for name, law in (("misses", belief), ("normal", normal)):
                off[name].append(abs(np.log(law.p_meets(limit)[over].mean() / met)))
        assert max(off["misses"]) < np.log(2), (column, off)
        assert sum(off["misses"]) < 0.5 * sum(off["normal"]), (column, off)


def test_picks_weigh_the_chance_of_meeting_the_budget_against_the_gain_over_the_best_measured():
    # A: believed 95 %, predicted 5 % over the budget (meets it with probability ~0.31); B: 90 %,
    # surely within; C: 99 %, surely over; D: 96 %, predicted 20 % over (probability ~0.03).
    beliefs = {"A": 95.0, "B": 90.0, "C": 99.0, "D": 96.0}
    latencies = {"A": 1.05, "B": 0.8, "C": 2.0, "D": 1.2}

    def pick(names: str, incumbent: float, per_budget: int = 1) -> str:
        n = len(names)
        cost = CostBelief(np.log([latencies[c] for c in names]), 0.1, np.log)
        models = _Models(np.array([[beliefs[c] for c in names]] * 4), 0.01, {"latency": cost})
        space = LoopSpace(list(names), list(names), np.zeros((n, 1)), np.zeros((n, 1)))
        budget = [Budget.of("1 ms", latency=1.0)]
        return "".join(names[i] for i in _pick(space, models, np.zeros(n, dtype=bool), budget, [incumbent], per_budget))

    # Far below both, B's sure 10 points beat A's 0.31 x 15; near B, A's chance is worth more.
    assert pick("ABC", 80.0) == "B"
    assert pick("ABC", 89.0) == "A"
    # C (P ~1e-12) is never taken while anything likelier is free.
    assert pick("ABC", 89.0, per_budget=2) == "AB"
    # D, believed a point above A but ten times less likely to meet the budget, comes after A.
    assert pick("ABD", 93.0, per_budget=2) == "AD"


def test_a_group_mate_of_the_answer_comes_first_where_groups_measure_differently():
    # A (measured, the answer at 92.2) and its unmeasured mates M (surely within the budget)
    # and N (less sure) compute alike: all believed 92.0, with 0.15 of noise between members.
    # L, its own group, is believed 92.3 but likely over the budget (P ~0.13): worth more than
    # a mate by expected improvement, yet less than three times as much.
    names = "AMNL"
    latencies = {"A": 0.8, "M": 0.7, "N": 0.9, "L": 1.12}

    def pick(belief_l: float, groups: list[str] | None, noise: float = 0.15, per_budget: int = 1) -> str:
        beliefs = [92.2, 92.0, 92.0, belief_l]
        cost = CostBelief(np.log([latencies[c] for c in names]), 0.1, np.log)
        models = _Models(np.array([beliefs] * 4), noise, {"latency": cost})
        space = LoopSpace(list(names), list(names), np.zeros((4, 1)), np.zeros((4, 1)), groups)
        done = np.array([True, False, False, False])
        budget = [Budget.of("1 ms", latency=1.0)]
        return "".join(names[i] for i in _pick(space, models, done, budget, [92.2], per_budget, [0]))

    alike = ["g", "g", "g", "l"]
    assert pick(92.3, alike) == "M"  # the likelier mate, before L
    assert pick(92.3, alike, per_budget=2) == "ML"
    assert pick(92.6, alike) == "L"  # L now worth more than three mates
    assert pick(92.3, None) == "L"  # without groups, by expected improvement alone
    assert pick(92.3, alike, noise=0.0) == "L"  # members that measure alike: nothing to draw


def test_with_three_picks_a_class_mate_of_the_answer_comes_first():
    # As above, but M and N are written differently from A (groups of their own) and compute
    # alike (one class). With two picks per budget, L and M by expected improvement; with three,
    # the likelier class-mate M first. Without classes, groups are the classes.
    names = "AMNL"
    cost = CostBelief(np.log([0.8, 0.7, 0.9, 1.12]), 0.1, np.log)
    models = _Models(np.array([[92.2, 92.0, 92.0, 92.3]] * 4), 0.15, {"latency": cost})
    done = np.array([True, False, False, False])
    budget = [Budget.of("1 ms", latency=1.0)]

    def pick(per_budget: int, classes: str | None = "cccl") -> str:
        x = np.zeros((4, 1))
        space = LoopSpace(list(names), list(names), x, x, list("amnl"), classes=classes and list(classes))
        return "".join(names[i] for i in _pick(space, models, done, budget, [92.2], per_budget, [0]))

    assert pick(2) == "LM"
    assert pick(3) == "MLN"
    assert pick(3, classes=None) == "LMN"


def test_a_band_whose_picks_gained_less_than_the_trees_claimed_is_worth_less():
    # F: believed 90.4 on average, 1.8 below the answer (92.2), but one tree in four says 94;
    # N: believed 92.0-92.4. By expected improvement F (a long shot) is worth five times N. Once
    # twenty picks of F's band (far below) claimed 0.25 each and none gained, F is worth a sixth.
    per_tree = np.array([[89.0, 89.5, 94.0, 89.0], [92.1, 92.2, 92.4, 92.0]]).T
    models = _Models(per_tree, 0.2, {"latency": CostBelief(np.log([0.8, 0.8]), 0.1, np.log)})
    space = LoopSpace(list("FN"), list("FN"), np.zeros((2, 1)), np.zeros((2, 1)))
    budget = [Budget.of("1 ms", latency=1.0)]

    def pick(gains: int, active: bool = True) -> tuple[str, list[float]]:
        realized = RealizedDiscount(active=active)
        for k in range(20):  # twenty past picks like F; `gains` of them measured 93 (met, beat)
            realized.file(0, 0, per_tree, 0.2, 92.2, 1.0)
            realized.settle({0: {"acc": 93.0 if k < gains else 90.0, "latency": 0.8}}, lambda v, b, inc: v["acc"] > inc)
        picked = _pick(space, models, np.zeros(2, dtype=bool), budget, [92.2], 1, (), realized)
        return "FN"[picked[0]], realized.factors().round(3).tolist()

    assert pick(0, active=False) == ("F", [1.0, 1.0, 1.0])
    assert pick(0) == ("N", [round(1 / (20 * 0.25 + 1), 3), 1.0, 1.0])
    assert pick(5) == ("F", [1.0, 1.0, 1.0])  # gained as often as claimed: no discount


def test_the_loop_settles_every_pick_and_its_discount_acts_from_three_picks_per_budget(table):
    budgets = percentile_budgets(table.values[XEON], [10, 25, 50])
    rows = np.stack([table.space.row_of(c) for c in table.archs])
    feats = nb201.accuracy_features(rows), nb201.cost_features(rows)
    space = LoopSpace(table.archs, table.archs, *feats, nb201.groups(rows))
    runs = {}
    for picks, realized in ((3, True), (3, False), (2, True), (2, False)):
        oracle = TableOracle(table, ACC, XEON, queries=64)
        settings = LoopSettings(64, initial=10, per_budget=picks, seed=0, trees=32, realized=realized)
        runs[picks, realized] = (oracle.revealed, run_loop(space, oracle, budgets, settings).realized)
    for _, bands in runs.values():
        assert sum(b["picks"] for b in bands) == 64 - 10  # every pick after the random start, once
        assert all(0 <= b["gained"] <= b["picks"] and 0 <= b["claimed"] <= b["picks"] for b in bands)
    assert min(b["factor"] for b in runs[3, True][1]) < 1.0  # some band gained less than claimed
    assert runs[3, True][0][:10] == runs[3, False][0][:10] and runs[3, True][0] != runs[3, False][0]
    # With two picks per budget (up to 100 queries) it is off: the same picks, every factor 1.
    assert runs[2, True][0] == runs[2, False][0] and {b["factor"] for b in runs[2, True][1]} == {1.0}


def test_loop_measures_only_what_it_pays_for_and_answers_with_measured_cells(table):
    budgets = percentile_budgets(table.values[XEON], [10, 25, 50])
    oracle = TableOracle(table, ACC, XEON, queries=40)
    rounds = []
    result = loop_search(table, oracle, budgets, LoopSettings(40, seed=3), on_round=rounds.append)
    assert oracle.spent == 40 and result.n_evaluations == 40
    assert [e.key for e in result.evaluations] == oracle.revealed
    for e in result.evaluations:
        assert (e.values["accuracy"], e.values["latency"]) == truth(table, e.key)
    assert rounds[0].round == 0 and rounds[-1].measured == 40
    assert [r.measured for r in rounds] == sorted(r.measured for r in rounds)
    pts = np.array([[e.values["accuracy"], -e.values["latency"]] for e in result.evaluations])
    for choice in result.select(budgets):
        assert choice.ok
        limit, chosen = choice.budget.limits()["latency"], choice.evaluation
        under = pts[:, 1] >= -limit
        # the answer is the best measured cell under the budget: nothing measured dominates it
        assert chosen.values["accuracy"] == pts[under, 0].max() and chosen.values["latency"] <= limit
        assert rounds[-1].best[choice.budget.name] == (chosen.key, chosen.values["accuracy"])
    assert non_dominated(np.array([[e.values["accuracy"], -e.values["latency"]] for e in result.front])).all()


def test_loop_is_deterministic_for_a_seed_and_a_resumed_loop_measures_nothing_twice(table):
    budgets = percentile_budgets(table.values[XEON], [25])
    runs = []
    for _ in range(2):
        oracle = TableOracle(table, ACC, XEON, queries=30)
        loop_search(table, oracle, budgets, LoopSettings(30, seed=5, trees=16))
        runs.append(oracle.revealed)
    assert runs[0] == runs[1]

    # Resume: the first 20 cells are already in the table; a fresh oracle holds only 10 queries.
    prior = [Measurement(c, c, dict(zip(("accuracy", "latency"), truth(table, c))), 0) for c in runs[0][:20]]
    oracle = TableOracle(table, ACC, XEON, queries=10)
    rows = np.stack([table.space.row_of(c) for c in table.archs])
    space = LoopSpace(table.archs, table.archs, nb201.accuracy_features(rows), nb201.cost_features(rows))
    resumed = run_loop(space, oracle, budgets, LoopSettings(30, seed=5, trees=16), prior=prior)
    assert len(resumed.measurements) == 30 and oracle.spent == 10
    assert not set(oracle.revealed) & set(runs[0][:20])


def test_a_budget_nothing_meets_ends_with_the_closest_measured_cell(table):
    impossible = Budget.of("impossible", latency=float(table.values[XEON].min()) / 2)
    oracle = TableOracle(table, ACC, XEON, queries=15)
    result = loop_search(table, oracle, [impossible], LoopSettings(15, seed=0))
    (choice,) = result.select([impossible])
    assert not choice.ok and oracle.spent == 15
    assert "budget 'impossible'" in choice.message and "none of the 15 evaluated" in choice.message
    assert "closest" in choice.message


def test_loop_told_the_true_values_finds_every_exact_optimum_in_its_first_round(table):
    # bench/loop_ceiling.py's arms: the loop believes the table instead of its fitted models.
    budgets = percentile_budgets(table.values[XEON], [10, 25, 50])
    oracle = TableOracle(table, ACC, XEON, queries=16)  # 10 random, then 2 picks per budget
    result = loop_search(table, oracle, budgets, LoopSettings(16, seed=3), reveal=("accuracy", "latency"))
    assert oracle.spent == 16
    assert [b.regret for b in score(table, ACC, XEON, result, budgets).budgets] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="reveal = 'power' is not allowed; allowed: accuracy, latency"):
        loop_search(table, TableOracle(table, ACC, XEON, queries=16), budgets, LoopSettings(16), reveal=("power",))


def test_loop_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="queries = 0 is not allowed; allowed: an integer >= 1"):
        LoopSettings(0)
    assert LoopSettings(300).n_initial == 30 and LoopSettings(50).n_initial == 10
    assert LoopSettings(100).n_per_budget == 2 and LoopSettings(101).n_per_budget == 3
    with pytest.raises(ValueError, match="realized = 'yes' is not allowed; allowed: true, false"):
        LoopSettings(10, realized="yes")
    with pytest.raises(ValueError, match="point = 0 is not allowed; allowed: a number > 0"):
        LoopSettings(10, point=0)


def test_cli_queries_mode_writes_every_paid_query(shared_data, tmp_path):
    csv_path = shared_data / "nb201_accuracy_latency.csv"
    out = tmp_path / "loop"
    cmd = [
        sys.executable, "-m", "app.search_bench", f"table={csv_path}", f"accuracy={ACC}",
        f"latency={XEON}", "queries=30", "seed=1", f"out={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "round 1:" in proc.stdout and "best measured per budget" in proc.stdout
    with open(out / "queries.csv", newline="") as f:
        queries = list(csv.DictReader(f))
    assert [int(q["query"]) for q in queries] == list(range(1, 31))
    assert len({q["arch"] for q in queries}) == 30
    for q in queries:
        assert (float(q["accuracy"]), float(q["latency"])) == truth(_load(csv_path), q["arch"])
    revealed = {q["arch"] for q in queries}
    with open(out / "front.csv", newline="") as f:
        assert {r["arch"] for r in csv.DictReader(f)} <= revealed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == "loop" and summary["queries_spent"] == 30
    for b in summary["budgets"]:
        assert b["found_arch"] in revealed


@pytest.mark.slow  # two more processes (keeps the default run under 8 minutes)
def test_cli_direct_samplers_spend_the_queries_and_loop_needs_them(shared_data, tmp_path):
    csv_path = shared_data / "nb201_accuracy_latency.csv"
    cmd = [
        sys.executable, "-m", "app.search_bench", f"table={csv_path}", f"accuracy={ACC}",
        f"latency={XEON}", "queries=30", "seed=1", f"out={tmp_path / 'loop'}",
    ]  # fmt: skip
    direct = subprocess.run([*cmd[:-1], "sampler=random", f"out={tmp_path / 'random'}"], capture_output=True, text=True)
    assert direct.returncode == 0, direct.stderr
    with open(tmp_path / "random" / "queries.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 30

    bad = subprocess.run([*cmd[:-2], "queries=null", "sampler=loop", f"out={tmp_path}"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ValueError: sampler = 'loop' needs queries")
