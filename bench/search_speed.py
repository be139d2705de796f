"""How fast does `ofa-search` search, predictors in the loop, against stock Optuna NSGA-II?

Both searches use the same fitted predictors (accuracy up, latency down) of a pipeline run and
the same number of distinct evaluations; per run it prints
  - candidate evaluations per second, end to end (Optuna's own machinery included);
  - for each latency budget, the wall time until the best predicted accuracy under the budget
    last improved, and that accuracy;
with medians and min-max spread over seeds, and the ratio ours / stock measured in the same run.
"Stock" is Optuna's NSGAIISampler (population 50) with one categorical per gene, asked and told
one trial at a time, predictors called per trial.

    .venv/bin/python bench/search_speed.py [--run runs/pipeline] [--evals 2000] [--seeds 3]
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
from predictors.predictor import load_predictor
from search.genes import MBV3Genes
from search.objectives import Budget, Constraint


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


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/pipeline"), help="an ofa-pipeline run folder")
    parser.add_argument("--evals", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    console = make_console()
    ckpt = args.run / "train" / "supernet.safetensors"
    if not ckpt.is_file():
        raise SystemExit(f"error: {ckpt} not found; run the main job first (make run) or pass --run <pipeline run>")
    space = read_supernet_metadata(ckpt)["space"]
    rec = Recorder(
        load_predictor(args.run / "fit" / "acc", space), load_predictor(args.run / "fit" / "latency_ms", space)
    )
    limits = json.loads((args.run / "search" / "stage.json").read_text())["summary"]["budgets_latency_ms"]
    budgets = [Budget(f"latency_ms<={v:g}", (Constraint("latency_ms", v),)) for v in limits]

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
