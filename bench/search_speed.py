"""How fast does `ofa-search` search, and does its cost per evaluation stay flat as it grows?

Scaling (always): `search.run` as `ofa-search` runs it (refined sampler, population 100,
three latency budgets) for 1,000, 5,000 and 20,000 distinct evaluations, each size `--repeats`
times in interleaved rounds (the fastest counts): wall and CPU seconds, evaluations per second,
and the 20k / 5k time ratio (4.00 when the cost per evaluation is flat). Metrics: the
pipeline run's predictors when `--run` holds them, else the `mnist` space with the shipped
`cpu-ort` latency predictor and a stand-in accuracy (a smooth function of MACs with a
gene-interaction term). Then the same on the NAS-Bench-201 table (`ofa-search-bench`'s search,
population 50) at 1,000, 5,000 and 10,000 evaluations (its space has 15,625 cells), when the
table is found.

Against stock Optuna (with a pipeline run only): both searches use the same fitted predictors
(accuracy up, latency down) and the same number of distinct evaluations; per run it prints
  - candidate evaluations per second, end to end (Optuna's own machinery included);
  - for each latency budget, the wall time until the best predicted accuracy under the budget
    last improved, and that accuracy;
with medians and min-max spread over seeds, and the ratio ours / stock measured in the same run.
"Stock" is Optuna's NSGAIISampler (population 50) with one categorical per gene, asked and told
one trial at a time, predictors called per trial.

    .venv/bin/python bench/search_speed.py [--run runs/pipeline] [--scale 1000 5000 20000] [--repeats 2]
        [--evals 2000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import optuna
from rich.table import Table

import search
from app.shell import make_console, quiet_optuna
from ofa.checkpoint import read_supernet_metadata
from ofa.space import SPACES
from predictors.predictor import load_predictor
from search.benchmarks.table import load_table, percentile_budgets, table_search
from search.genes import MBV3Genes
from search.objectives import Budget, Constraint, mbv3_macs

REPO = Path(__file__).resolve().parents[1]
NB201_TABLE = REPO.parent / "shared" / "data" / "nb201_accuracy_latency.csv"


class Recorder:
    """Wraps the predictors: remembers when each evaluated config's values became known."""

    def __init__(self, acc, lat) -> None:
        self.acc, self.lat, self.log = acc, lat, []  # log: (time, acc, latency) per config

    def reset(self) -> None:
        self.log, self.t0 = [], time.perf_counter()

    def lat_fn(self, archs):
        return self.lat.predict(archs)

    def both(self, archs) -> tuple[np.ndarray, np.ndarray]:
        a, lat = self.acc.predict(archs), self.lat.predict(archs)
        now = time.perf_counter() - self.t0
        self.log += [(now, float(x), float(y)) for x, y in zip(a, lat)]
        return a, lat


def settle_times(log: list[tuple[float, float, float]], limits: list[float]) -> list[tuple[float, float]]:
    """Per limit: (time of the last improvement of the best accuracy under it, that accuracy)."""
    out = []
    for limit in limits:
        best, when = -np.inf, float("nan")
        for t, acc, lat in log:
            if lat <= limit and acc > best:
                best, when = acc, t
        out.append((when, best))
    return out


def ours(space, rec: Recorder, budgets: list[Budget], n: int, seed: int) -> tuple[float, list]:
    def acc(archs):  # records (time, acc, latency); latency is predicted again for the engine (cheap)
        return rec.both(archs)[0]

    objectives = [search.metric("acc", acc, "maximize"), search.metric("latency_ms", rec.lat_fn, "minimize", "ms")]
    rec.reset()
    result = search.run(space, objectives, search.SearchSettings(n, 100, seed), budgets=budgets)
    return result.n_evaluations / (time.perf_counter() - rec.t0), rec.log


def stock(space, rec: Recorder, n: int, seed: int) -> tuple[float, list]:
    genes = MBV3Genes(space)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(population_size=50, seed=seed)
    )
    rec.reset()
    seen: set[str] = set()
    while len(seen) < n:
        trial = study.ask()
        row = [trial.suggest_categorical(g.name, list(range(len(g.choices)))) for g in genes.genes]
        arch = genes.decode(genes.canonical(np.array([row]))[0])
        a, lat = rec.both([arch])
        seen.add(arch.key())
        study.tell(trial, [float(a[0]), float(lat[0])])
    return len(seen) / (time.perf_counter() - rec.t0), rec.log


def standin_metrics(space, lat) -> list:
    """Accuracy stand-in (up) and a latency predictor (down) on an MBV3 space."""
    genes, macs = MBV3Genes(space), mbv3_macs(space)
    w = np.random.default_rng(0).normal(0, 1, genes.n_genes)

    def acc(archs):
        rows = np.stack([genes.encode(a) for a in archs])
        return 80 + 4 * np.log(np.asarray(macs(archs), float) / 1e6) + 0.5 * np.sin(rows @ w)

    return [search.metric("acc", acc, "maximize"), search.metric("latency_ms", lat.predict, "minimize", "ms")]


def timed(fn) -> tuple[float, float, object]:
    """(wall s, CPU s, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def scaling(console, runs: dict, sizes: list[int], repeats: int, title: str) -> None:
    """`runs[n]()` searches n distinct evaluations; best of `repeats` interleaved rounds."""
    best: dict[int, tuple[float, float, object]] = {}
    for r in range(repeats):
        for n in sizes:
            wall, cpu, res = timed(lambda n=n: runs(n))
            console.print(f"round {r + 1}, {n:,} evaluations: {wall:.2f} s wall, {cpu:.2f} s CPU")
            if n not in best or wall < best[n][0]:
                best[n] = (wall, cpu, res)
    table = Table(title=title)
    for col in ("evaluations", "Optuna trials", "wall s", "CPU s", "evaluations/s (wall)", "evaluations/s (CPU)"):
        table.add_column(col, justify="right")
    for n in sizes:
        wall, cpu, res = best[n]
        assert res.n_evaluations == n, (n, res.n_evaluations, res.stopped)
        table.add_row(f"{n:,}", f"{res.n_trials:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{n / wall:,.0f}", f"{n / cpu:,.0f}")
    console.print(table)
    lo, hi = sizes[-2], sizes[-1]
    console.print(
        f"{hi:,} / {lo:,} evaluations: time x{best[hi][0] / best[lo][0]:.2f} wall, x{best[hi][1] / best[lo][1]:.2f} "
        f"CPU (flat cost per evaluation: x{hi / lo:.2f})"
    )


def run_scaling(console, args, space, metrics, limits) -> None:
    budgets = [Budget(f"latency_ms<={v:.4g}", (Constraint("latency_ms", float(v)),)) for v in limits]

    def mbv3(n: int):
        return search.run(space, metrics, search.SearchSettings(n, 100, 0), budgets=budgets)

    with quiet_optuna():
        scaling(console, mbv3, args.scale, args.repeats, f"search.run on {space.name}: refined, population 100")
        if NB201_TABLE.is_file():
            acc, lat = "cifar10_acc", "latency_ms_gold_6226"
            nb201 = load_table(NB201_TABLE, [acc, lat])
            nb_budgets = percentile_budgets(nb201.values[lat], [10, 25, 50])

            def table_run(n: int):
                return table_search(nb201, acc, lat, search.SearchSettings(n, 50, 0), nb_budgets)

            sizes = [n for n in (1000, 5000, 10000) if n <= 15625]
            scaling(console, table_run, sizes, args.repeats, f"ofa-search-bench's search on NAS-Bench-201 ({lat})")


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/pipeline"), help="an ofa-pipeline run folder")
    parser.add_argument("--evals", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", type=int, nargs="+", default=[1000, 5000, 20000], help="evaluations per size")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the sizes (the best counts)")
    args = parser.parse_args()
    console = make_console()
    ckpt = args.run / "train" / "supernet.safetensors"
    if not ckpt.is_file():
        console.print(f"{ckpt} not found (make run, or --run <pipeline run>): stand-in metrics, no stock comparison")
        space = SPACES["mnist"]
        lat = load_predictor(REPO / "hw_profiles" / "cpu-ort" / "predictors" / "latency_ms", space)
        sample = [MBV3Genes(space).decode(r) for r in MBV3Genes(space).random_rows(2000, np.random.default_rng(1))]
        run_scaling(console, args, space, standin_metrics(space, lat), np.percentile(lat.predict(sample), [10, 25, 50]))
        return
    space = read_supernet_metadata(ckpt)["space"]
    rec = Recorder(
        load_predictor(args.run / "fit" / "acc", space), load_predictor(args.run / "fit" / "latency_ms", space)
    )
    limits = json.loads((args.run / "search" / "stage.json").read_text())["summary"]["budgets_latency_ms"]
    budgets = [Budget(f"latency_ms<={v:g}", (Constraint("latency_ms", v),)) for v in limits]
    metrics = [search.metric("acc", rec.acc.predict, "maximize"), search.metric("latency_ms", rec.lat_fn, "minimize")]
    run_scaling(console, args, space, metrics, limits)

    speed = {"ours": [], "stock": []}
    settle = {"ours": [], "stock": []}
    for seed in range(args.seeds):  # interleaved: ours then stock for each seed
        for name in ("ours", "stock"):
            with quiet_optuna():
                if name == "ours":
                    rate, log = ours(space, rec, budgets, args.evals, seed)
                else:
                    rate, log = stock(space, rec, args.evals, seed)
            speed[name].append(rate)
            settle[name].append(settle_times(log, limits))
            console.print(f"seed {seed} {name}: {rate:.0f} evaluations/s")

    table = Table(title=f"search speed: {args.evals} distinct evaluations, {args.seeds} seeds, median [min-max]")
    table.add_column("")
    table.add_column("ours", justify="right")
    table.add_column("stock NSGA-II", justify="right")
    table.add_column("ours / stock", justify="right")
    ratios = [a / b for a, b in zip(speed["ours"], speed["stock"])]
    table.add_row("evaluations/s", spread(speed["ours"], ".0f"), spread(speed["stock"], ".0f"), spread(ratios, ".1f"))
    for i, limit in enumerate(limits):
        for what, k, fmt in (("s to final answer", 0, ".2f"), ("best acc %", 1, ".2f")):
            scale = 100 if k == 1 else 1
            o = [scale * s[i][k] for s in settle["ours"]]
            b = [scale * s[i][k] for s in settle["stock"]]
            table.add_row(f"<= {limit:g} ms: {what}", spread(o, fmt), spread(b, fmt), "")
    console.print(table)


if __name__ == "__main__":
    main()
