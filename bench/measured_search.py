"""Does measuring in the loop give better answers than fitting once? Test accuracy per budget.

One trained supernet is shared by every arm. A pool of sub-networks (the eval stage's sampler:
the corners, then uniform random ones) is measured on the validation split; its first
`--prior` rows are what `make run`'s eval stage gives the search. Per latency budget:

  (a) loop      ofa-search's measurement loop: the prior plus `--loop` measured picks
      loop-shrunk the same measurements, answered by the best posterior mean (validation
                  accuracy shrunk toward an out-of-bag model of the others): a candidate rule
  (b) fit-once  the accuracy predictor fitted on the prior, NSGA-II, its choice per budget
  (c) random    the best (validation) of prior + loop-many random pool sub-networks
  (d) oracle    the best (validation) of the whole pool (`--pool`, a near-oracle)

Every answer is then measured on the test split (no arm chose with it), with its binomial
standard error. Latency is the device predictor's, times (1 + its margin), for every arm
alike (`ofa-search measure_latency=false`): what is compared is the choice of accuracy.
(a) and (c) run for several seeds; the table shows their mean and range. Last, the final
predictor (refitted on everything the loop measured) against the measured accuracy of the
answers.

    .venv/bin/python bench/measured_search.py runs/train/mnist5k-sandwich [--seeds 3] \
        [--prior 80] [--loop 30] [--pool 300] [--device cpu-ort] [--budget-quantiles 0.1 0.25 0.5] \
        [--work runs/bench/measured_search]

Budgets default to the 10th/25th/50th percentile of the pool's latency, so that they bind (the
device profile's budgets let the space's best accuracy through at the smallest one).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import hydra
import numpy as np
from hydra import compose, initialize_config_dir
from rich.table import Table

from app.fit import settings_from
from app.search import load_inputs, run_engine
from app.search_loop import SubnetMeasurer, accuracy_on_test_split, run_measured_loop
from app.shell import CONF_DIR, make_console, quiet_libraries, quiet_optuna, register_resolvers
from ofa.archtable import write_rows
from ofa.checkpoint import load_supernet, resolve_checkpoint
from ofa.space import ArchConfig
from ofa.training.eval_subnets import COLUMNS, eval_archs, evaluate_subnets
from predictors.fit import fit_predictor

ARMS = ("loop", "loop-shrunk", "fit-once", "random", "oracle")


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def measure_pool(checkpoint: Path, work: Path, args, console) -> tuple[list[dict], Path]:
    """Validation accuracy of the pool (resumable) and the prior table (its first rows)."""
    supernet, meta = load_supernet(checkpoint)
    dm = hydra.utils.instantiate(compose_cfg("search", ["checkpoint=x"]).data, seed=meta["info"].get("seed", 0))
    archs = eval_archs(supernet.space, args.pool, args.pool_seed)
    with console.status(f"measuring the pool of {len(archs)} sub-networks (validation split)"):
        rows = evaluate_subnets(supernet, dm, archs, work / "pool.csv", args.calibration)
    prior = work / "prior.csv"
    write_rows(prior, rows[: args.prior], COLUMNS)
    return rows, prior


def search_cfg(checkpoint: Path, work: Path, prior: Path, args, seed: int, out: str, budgets: list[float] = ()):
    given = [f"budgets.latency_ms=[{','.join(f'{b:.4f}' for b in budgets)}]"] if budgets else []
    return compose_cfg("search", [
        f"checkpoint={checkpoint}", f"device={args.device}", f"predictors.acc={work / 'acc'}",
        f"loop.prior=[{prior}]", f"loop.measurements={args.loop}", f"seed={seed}", f"n_trials={args.trials}",
        "measure_latency=false", "export=false", f"bn_calibration_images={args.calibration}", f"hydra.run.dir={out}",
        *given,
    ])  # fmt: skip


def shrunk_answers(run, inputs, dm) -> dict[str, str | None]:
    """A candidate rule, not what ofa-search does: per budget the loop's measured sub-network
    with the best posterior mean, its validation accuracy shrunk toward an out-of-bag
    extra-trees prediction from the others (less winner's curse than the raw best)."""
    from sklearn.ensemble import ExtraTreesRegressor

    from app.search_loop import binomial_se, loop_space
    from search.loop import meets

    ms = run.measurements
    feats = loop_space([m.config for m in ms], inputs.space).accuracy_features
    y = np.array([m.values["acc"] for m in ms])
    et = ExtraTreesRegressor(200, max_features=0.5, bootstrap=True, oob_score=True, random_state=0).fit(feats, y)
    oob = et.oob_prediction_
    noise2 = binomial_se(float(np.median(y)), len(dm.val_set)) ** 2
    model2 = max(float(np.var(y - oob)) - noise2, 1e-6)
    post = (y / noise2 + oob / model2) / (1 / noise2 + 1 / model2)
    out = {}
    for b in inputs.budgets:
        ok = [i for i, m in enumerate(ms) if meets(m.values, b)]
        out[b.name] = ms[max(ok, key=lambda i: post[i])].key if ok else None
    return out


def best_meeting(rows: list[dict], latency: dict[str, float], limit: float) -> str | None:
    ok = [r for r in rows if latency[r["key"]] <= limit]
    return max(ok, key=lambda r: float(r["acc"]))["key"] if ok else None


def run_arms(checkpoint: Path, work: Path, pool: list[dict], prior: Path, args, console) -> dict:
    """Per arm and seed: budget name -> answer key (None: nothing met it)."""
    answers: dict[str, dict[int, dict[str, str | None]]] = {a: {} for a in ARMS}
    cfg = search_cfg(checkpoint, work, prior, args, 0, str(work / "fit-once"))
    inputs = load_inputs(cfg)
    dm = hydra.utils.instantiate(cfg.data, seed=inputs.meta["info"].get("seed", 0))
    for r in pool:
        r["key"] = ArchConfig.from_csv_fields(r).key()
    figures, _ = SubnetMeasurer(inputs, dm, cfg, work, console).costs(
        [ArchConfig.from_key(r["key"]) for r in pool], measure=False
    )
    latency = {r["key"]: f["latency_ms"] for r, f in zip(pool, figures)}
    budgets = [float(np.quantile(list(latency.values()), q)) for q in args.budget_quantiles]
    if budgets:  # budgets that bind: quantiles of the pool's latency (the profile's own may not)
        cfg = search_cfg(checkpoint, work, prior, args, 0, str(work / "fit-once"), budgets)
        inputs = load_inputs(cfg)
    names = [b.name for b in inputs.budgets]
    limits = {b.name: b.constraints[0].limit for b in inputs.budgets}
    result = run_engine(cfg, inputs, console)
    answers["fit-once"][0] = {c.budget.name: c.evaluation.key if c.ok else None for c in result.select(inputs.budgets)}
    answers["oracle"][0] = {n: best_meeting(pool, latency, limits[n]) for n in names}
    for seed in range(args.seeds):
        out = work / f"loop-seed{seed}"
        cfg = search_cfg(checkpoint, work, prior, args, seed, str(out), budgets)
        run = run_measured_loop(cfg, load_inputs(cfg), [e.config for e in run_engine(cfg, inputs, console).evaluations],
                                dm, out, console)  # fmt: skip
        answers["loop"][seed] = {a.budget.name: a.measurement.key if a.measurement else None for a in run.answers}
        answers["loop-shrunk"][seed] = shrunk_answers(run, inputs, dm)
        rng = np.random.default_rng(seed)
        drawn = [pool[i] for i in rng.choice(len(pool), args.prior + args.loop, replace=False)]
        answers["random"][seed] = {n: best_meeting(drawn, latency, limits[n]) for n in names}
    return {"answers": answers, "inputs": inputs, "dm": dm, "names": names, "limits": limits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="an ofa-train run folder or its supernet.safetensors")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prior", type=int, default=80)
    parser.add_argument("--loop", type=int, default=30)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--pool-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--device", default="cpu-ort")
    parser.add_argument("--budget-quantiles", type=float, nargs="*", default=[0.1, 0.25, 0.5],
                        help="budgets at these quantiles of the pool latency; none: the profile budgets")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("runs/bench/measured_search"))
    args = parser.parse_args()
    register_resolvers()
    console = make_console()
    start = time.perf_counter()
    with quiet_libraries(), quiet_optuna():
        report(args, console)
    console.print(f"({time.perf_counter() - start:.0f} s)")


def fit_accuracy(table: Path, out: Path, console) -> None:
    cfg = compose_cfg("fit", ["fit_models=accuracy", "model=[ridge,mlp]"])
    with console.status(f"fitting the accuracy predictor on {table.name}"):
        fit_predictor(table, "acc", out, settings_from(cfg))


def report(args, console) -> None:
    checkpoint = resolve_checkpoint(args.run)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    pool, prior = measure_pool(checkpoint, work, args, console)
    fit_accuracy(prior, work / "acc", console)
    arms = run_arms(checkpoint, work, pool, prior, args, console)
    keys = {k for per_seed in arms["answers"].values() for ans in per_seed.values() for k in ans.values() if k}
    tests = accuracy_on_test_split(arms["inputs"], arms["dm"], [ArchConfig.from_key(k) for k in keys],
                                   args.calibration)  # fmt: skip
    table = Table(
        title=f"test accuracy % of each budget's answer ({len(pool)} pool, {args.seeds} seeds for loop/random)"
    )
    for col in ("budget", *ARMS, "loop - random", "loop - oracle", "test SE"):
        table.add_column(col, justify="left" if col == "budget" else "right")
    for name in arms["names"]:
        per_arm = {a: [100 * tests[k][0] for ans in arms["answers"][a].values() if (k := ans[name])] for a in ARMS}
        cells = [_spread(per_arm[a]) for a in ARMS]
        diff_r = _mean(per_arm["loop"]) - _mean(per_arm["random"])
        diff_o = _mean(per_arm["loop"]) - _mean(per_arm["oracle"])
        se = 100 * statistics.mean(t[1] for t in tests.values())
        table.add_row(name, *cells, f"{diff_r:+.2f}", f"{diff_o:+.2f}", f"{se:.2f}")
    console.print(table)
    predictor_error(work, arms, tests, args, console)


def predictor_error(work: Path, arms: dict, tests: dict, args, console) -> None:
    """The accuracy predictor refitted on all the loop measured (seed 0) vs the answers' accuracy."""
    from predictors.predictor import load_predictor

    table = work / "final.csv"
    rows = [r for p in (work / "prior.csv", work / "loop-seed0" / "measured_accuracy.csv") for r in _read(p)]
    write_rows(table, rows, COLUMNS)
    fit_accuracy(table, work / "acc-final", console)
    predictor = load_predictor(work / "acc-final", arms["inputs"].space)
    keys = [k for k in arms["answers"]["loop"][0].values() if k]
    predicted = predictor.predict([ArchConfig.from_key(k) for k in keys])
    errors = [abs(100 * (p - tests[k][0])) for p, k in zip(predicted, keys)]
    console.print(
        f"final predictor ({len(rows)} measured) on the loop's answers: |predicted - test| "
        + ", ".join(f"{e:.2f}" for e in errors)
        + f" pt (max {max(errors):.2f})"
    )


def _read(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.1f}-{max(values):.1f})"


if __name__ == "__main__":
    main()
