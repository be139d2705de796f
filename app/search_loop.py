"""`ofa-search`'s measurement loop: the answer per budget is the best sub-network *measured*.

The NSGA-II search on the predictors proposes candidates (every sub-network it evaluated);
`search.loop.run_loop` then measures them in rounds: accuracy after BN recalibration on the
validation split and, when the device's backend runs on this machine, latency with the
device's profile. Measurements are appended to `measured_accuracy.csv` and
`measured_latency.csv` in the run folder, so an interrupted loop resumes without measuring a
sub-network twice. Sub-networks measured before (the eval table, `loop.prior`) count as
measured too: an answer is never beaten by a sub-network the run already measured.

Where latency cannot be measured here, a sub-network meets a latency budget when its
predicted latency times (1 + margin) does; the margin comes from the latency predictor's own
held-out error (1.6 x its MAPE: about the 90th percentile of a normal error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig
from rich.console import Console

from ofa.archtable import archs_of, read_arch_table, read_csv
from ofa.errors import UserError
from ofa.evaluation import subnet_accuracy
from ofa.space import ArchConfig, MBV3Space
from ofa.training.eval_subnets import EvalData, evaluate_subnets, read_eval_data
from predictors.features import encode, to_arrays
from search.loop import LoopSettings, LoopSpace, Measurement, RoundReport, best_measured, run_loop
from search.objectives import MINIMIZE, Budget

if TYPE_CHECKING:  # lightning (via the data module) costs ~2 s at start-up; hydra imports it when needed
    from ofa.data.datamodule import ImageDataModule

MARGIN_PER_MAPE = 1.6  # a normal error's 90th percentile is ~1.6x its mean absolute error
HARDWARE = ("latency_ms", "power_w", "energy_mj")


@dataclass(frozen=True)
class Answer:
    """One budget's answer: the best measured sub-network meeting it (None: nothing did)."""

    budget: Budget
    measurement: Measurement | None
    cost_source: str  # "measured" (on this machine) or "predicted + margin"


@dataclass
class LoopRun:
    answers: list[Answer]
    measurements: list[Measurement]
    rounds: int
    stopped: str
    n_new: int  # sub-networks the loop measured (the rest were measured before)
    sources: dict[str, str]  # arch key -> "measured" or "predicted + margin" (hardware figures)


class SubnetMeasurer:
    """The loop's `measure`: accuracy on the validation split for every config; hardware costs
    measured where the device runs here (latency), else predicted and inflated by the margin."""

    def __init__(self, inputs: Any, dm: ImageDataModule, cfg: DictConfig, out: Path, console: Console) -> None:
        from app.search_measure import measure_latency

        self.inputs, self.dm, self.cfg, self.out, self.console = inputs, dm, cfg, out, console
        self._measure_latency = measure_latency
        self.accuracy_table = out / "measured_accuracy.csv"
        self.latency_here = self._latency_runs_here()
        self.margins = {t: _margin(p) for t, p in inputs.predictors.items() if t in HARDWARE}
        self.floors = {t: self._floor(t) for t in self.margins}
        self.sources: dict[str, str] = {}  # arch key -> where its hardware figures came from
        self._eval_data: EvalData | None = None  # read at the first new sub-network, kept for every round

    def _latency_runs_here(self) -> bool:
        from predictors.measure.backends import runs_here

        mode = self.cfg.measure_latency
        return mode is True or mode == "true" or (mode == "auto" and runs_here(self.inputs.profile.backend))

    def accuracy(self, archs: Sequence[ArchConfig]) -> dict[str, float]:
        """Validation accuracy per arch key, appending the new ones to measured_accuracy.csv."""
        rows = evaluate_subnets(self.inputs.supernet, self.dm, list(archs), self.accuracy_table,
                                int(self.cfg.bn_calibration_images), data=self._read_eval_data)  # fmt: skip
        wanted = {a.key() for a in archs}
        return {k: float(r["acc"]) for r in rows if (k := ArchConfig.from_csv_fields(r).key()) in wanted}

    def _read_eval_data(self) -> EvalData:
        if self._eval_data is None:
            self._eval_data = read_eval_data(self.dm, int(self.cfg.bn_calibration_images))
        return self._eval_data

    def costs(self, archs: Sequence[ArchConfig], measure: bool) -> tuple[list[dict[str, float]], list[str]]:
        """Per arch: every hardware figure the budgets limit, and where its latency came from."""
        measured: dict[str, float] = {}
        if measure and self.latency_here and archs:
            measured = self._measure_latency(self.inputs.profile, self.inputs.supernet, list(archs), self.out,
                                             self.cfg.measure_latency, self.console)  # fmt: skip
        predicted = {t: self.predicted(t, archs) * (1 + m) for t, m in self.margins.items()}
        figures, sources = [], []
        for i, arch in enumerate(archs):
            values = {t: float(v[i]) for t, v in predicted.items()}
            key = arch.key()
            if key in measured:
                values["latency_ms"] = measured[key]
            figures.append(values)
            sources.append("measured" if key in measured else "predicted + margin")
        return figures, sources

    def predicted(self, target: str, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Predicted cost, never below the space's smallest sub-network's: a linear predictor
        extrapolates to ~0 or below far from its table, and such a figure meets any budget."""
        if not archs:
            return np.zeros(0)
        return np.maximum(np.asarray(self.inputs.metrics[target].fn(list(archs)), dtype=float), self.floors[target])

    def _floor(self, target: str) -> float:
        space = self.inputs.space
        smallest = [space.smallest(r) for r in space.resolutions]
        floor = float(np.min(self.inputs.metrics[target].fn(smallest)))
        if floor <= 0:
            raise UserError(
                f"the {target} predictor predicts {floor:.4g} for the space's smallest sub-network; a cost predictor "
                "must predict positive costs (refit it: ofa-fit, or measure the latency here: measure_latency=true)"
            )
        return floor

    def __call__(self, archs: list[ArchConfig]) -> list[dict[str, float]]:
        acc = self.accuracy(archs)
        figures, sources = self.costs(archs, measure=True)
        for arch, values, source in zip(archs, figures, sources):
            values["acc"] = acc[arch.key()]
            self.sources[arch.key()] = source
        return figures


def _margin(predictor: Any) -> float:
    mape = (getattr(predictor, "metrics", None) or {}).get("mape")
    return MARGIN_PER_MAPE * float(mape) / 100 if mape is not None and math.isfinite(mape) else 0.10


def prior_paths(loop: DictConfig) -> list[Path]:
    """The accuracy tables `loop.prior` names (one path or a list; none: [])."""
    given = [loop.prior] if isinstance(loop.prior, str) else list(loop.prior or [])
    return [Path(str(p)) for p in given]


def read_prior(paths: Sequence[Path], space: MBV3Space) -> dict[str, tuple[ArchConfig, float]]:
    """Arch key -> (arch, validation accuracy) of every accuracy table given (later ones win)."""
    prior: dict[str, tuple[ArchConfig, float]] = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        table = read_arch_table(path, space)
        for arch, row in zip(archs_of(table, space), table.rows):
            prior[arch.key()] = (arch, float(row["acc"]))
    return prior


def measured_latencies(out: Path) -> dict[str, float]:
    path = out / "measured_latency.csv"
    if not path.is_file():
        return {}
    return {ArchConfig.from_csv_fields(r).key(): float(r["latency_ms"]) for r in read_csv(path).rows}


def loop_space(archs: Sequence[ArchConfig], space: MBV3Space) -> LoopSpace:
    """Candidates with the predictors' features: one-hot + analytic for accuracy, analytic for cost."""
    arrays = to_arrays(archs, space)
    return LoopSpace(list(archs), [a.key() for a in archs], encode(arrays, space, "all"),
                     encode(arrays, space, "analytic"))  # fmt: skip


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def prior_measurements(measurer: SubnetMeasurer, prior: dict[str, tuple[ArchConfig, float]]) -> list[Measurement]:
    """The earlier measurements as the loop's: measured latency where this run has it."""
    known = measured_latencies(measurer.out)
    archs = [a for a, _ in prior.values()]
    figures, sources = measurer.costs(archs, measure=False)
    out = []
    for (key, (arch, acc)), values, source in zip(prior.items(), figures, sources):
        if key in known and "latency_ms" in values:
            values["latency_ms"], source = known[key], "measured"
        measurer.sources[key] = source
        out.append(Measurement(key, arch, {**values, "acc": acc}, 0))
    return out


def confirm_answers(
    measurer: SubnetMeasurer, measurements: list[Measurement], budgets: Sequence[Budget]
) -> list[Measurement]:
    """Measure the latency of answers that were only predicted (when latency runs here), until
    every budget's best is measured or nothing meets it; returns the updated measurements."""
    while measurer.latency_here:
        todo = {}
        for b in budgets:
            m = best_measured(measurements, b, "acc")
            if m is not None and measurer.sources.get(m.key) != "measured":
                todo[m.key] = m
        if not todo:
            break
        figures, sources = measurer.costs([m.config for m in todo.values()], measure=True)
        updated = {k: (f, s) for k, f, s in zip(todo, figures, sources)}
        if any(s != "measured" for _, s in updated.values()):
            break  # the backend refused: keep the predictions
        for k, (_, s) in updated.items():
            measurer.sources[k] = s
        measurements = [
            Measurement(m.key, m.config, {**m.values, **updated[m.key][0]}, m.round) if m.key in updated else m
            for m in measurements
        ]
    return measurements


def round_line(console: Console, budgets: Sequence[Budget]):
    """A console line per round: how many are measured and each budget's best so far."""
    names = {b.name: b for b in budgets}

    def show(r: RoundReport) -> None:
        best = "; ".join(f"{n} {100 * v[1]:.1f} %" if v else f"{n} none yet" for n, v in r.best.items() if n in names)
        console.print(f"round {r.round}: {r.measured} measured (+{r.picked}); best per budget: {best}")

    return show


def run_measured_loop(
    cfg: DictConfig, inputs: Any, candidates: Sequence[ArchConfig], dm: ImageDataModule, out: Path, console: Console
) -> LoopRun:
    """Measure `cfg.loop.measurements` new sub-networks in rounds (prior ones are free) and
    answer every budget with the best measured sub-network meeting it."""
    loop = cfg.loop
    measurer = SubnetMeasurer(inputs, dm, cfg, out, console)
    earlier = read_prior(prior_paths(loop) or [inputs.checkpoint.parent / "accuracy.csv"], inputs.space)
    own = read_prior([measurer.accuracy_table], inputs.space)  # this loop's, before an interruption
    prior = prior_measurements(measurer, {**earlier, **own})
    queries = len(earlier) + int(loop.measurements)  # a resumed loop finishes; it does not start over
    pool = list({a.key(): a for a in [*candidates, *(m.config for m in prior)]}.values())
    n_val = len(dm.val_set) if dm.val_set is not None else 0
    noise = binomial_se(float(np.median([m.values["acc"] for m in prior])) if prior else 0.9, n_val)
    # accuracy is a fraction here: one point (`search.realized`'s unit) is 0.01
    settings = LoopSettings(queries=queries, initial=loop.initial, per_budget=loop.per_budget, seed=int(cfg.seed),
                            noise=noise, patience=loop.patience, realized=loop.get("realized", True),
                            point=0.01)  # fmt: skip
    budgets = list(inputs.budgets)
    result = run_loop(loop_space(pool, inputs.space), measurer, budgets, settings, objective="acc",
                      prior=prior, on_round=round_line(console, budgets))  # fmt: skip
    measurements = confirm_answers(measurer, result.measurements, budgets)
    answers = []
    for b in budgets:
        m = best_measured(measurements, b, "acc")
        answers.append(Answer(b, m, measurer.sources.get(m.key, "") if m else ""))
    n_new = len(result.measurements) - len(earlier)
    return LoopRun(answers, measurements, result.rounds, result.stopped, n_new, measurer.sources)


def accuracy_on_test_split(
    inputs: Any, dm: ImageDataModule, archs: Sequence[ArchConfig], n_calib: int
) -> dict[str, tuple]:
    """Arch key -> (test accuracy, binomial standard error, test images) on the split no stage saw."""
    if dm.test_set is None or not archs:
        return {}
    images = dm.calibration_images(n_calib)
    batches = [(dm.normalize(x), y) for x, y in dm.test_dataloader()]
    n = len(dm.test_set)
    out = {}
    for arch in archs:
        _, acc = subnet_accuracy(inputs.supernet, arch, images, batches)
        out[arch.key()] = (acc, binomial_se(acc, n), n)
    return out


def _excess(m: Measurement, budget: Budget) -> float:
    """How far `m` lies over its worst limit, relative (the loop's limits are upper ones)."""
    return max(float(c.violation(m.values[c.name], MINIMIZE)) for c in budget.constraints)


def answer_choices(run: LoopRun, inputs: Any) -> list[Any]:
    """The loop's answers as `search.result.BudgetChoice`s, each with its predicted figures
    (what the fit-once search would have believed) for the report."""
    from search.result import BudgetChoice, Evaluation

    choices = []
    for a in run.answers:
        limits = ", ".join(f"{c.name} <= {c.limit:g}" for c in a.budget.constraints)
        head = f"budget {a.budget.name!r} ({limits})"
        if a.measurement is None:
            closest = min(run.measurements, key=lambda m: _excess(m, a.budget), default=None)
            near = "" if closest is None else (
                f"; closest: {closest.key} with "
                + ", ".join(f"{c.name} {closest.values[c.name]:.4g}" for c in a.budget.constraints)
                + f" ({100 * _excess(closest, a.budget):+.0f}%), acc {100 * closest.values['acc']:.2f} %"
            )  # fmt: skip
            message = f"{head}: none of the {len(run.measurements)} measured sub-networks meets it{near}"
            choices.append(BudgetChoice(a.budget, None, None, message))
            continue
        arch = a.measurement.config
        predicted = {name: float(metric.fn([arch])[0]) for name, metric in inputs.metrics.items()}
        evaluation = Evaluation(arch, a.measurement.key, predicted, True, -1)
        m = a.measurement
        message = (
            f"{head}: {m.key}, the best of {len(run.measurements)} measured: acc {100 * m.values['acc']:.2f} % "
            f"(validation), latency {a.cost_source}"
        )
        choices.append(BudgetChoice(a.budget, evaluation, None, message))
    return choices
