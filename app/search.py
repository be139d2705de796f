"""`ofa-search device=<name> checkpoint=<path>`: the best sub-network for each of a device's budgets.

One NSGA-II search (search.engine) on the device's predictors answers every budget; each chosen
sub-network is extracted from the supernet, its BN statistics recalibrated, its accuracy measured
on the validation split and, when the device's backend runs on this machine, its latency measured
with the device's profile. Each is exported (ONNX + weights.safetensors + arch.json) and the run
ends with report.json, report.md (predicted vs measured per budget) and pareto.png.

Predictors (ofa-fit output folders) default to:
  hardware targets: hw_profiles/<device>/predictors/<target>   (latency_ms, power_w, energy_mj)
  accuracy:         <checkpoint folder>/predictors/acc
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn

from app.progress import progress_bar
from app.search_loop import accuracy_on_test_split, answer_choices, prior_paths, run_measured_loop
from app.search_measure import Measured, measure_accuracy, measure_choices
from app.search_report import BudgetRow, console_table, mark_ties, pareto_png, write_reports
from app.shell import UserError, hydra_command, make_console, quiet_optuna, torch_threads
from ofa.checkpoint import check_trained_on, load_supernet, resolve_checkpoint
from ofa.errors import check_int
from ofa.export import export_onnx, save_subnet
from ofa.io import atomic_folder, atomic_write_csv
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig, MBV3Space
from predictors.measure.profile import DeviceProfile, load_profile
from predictors.predictor import load_predictor

if TYPE_CHECKING:  # lightning (via the data module) costs ~2 s at start-up; hydra imports it when needed
    from ofa.data.datamodule import ImageDataModule

HARDWARE_TARGETS = {"latency_ms": "ms", "power_w": "W", "energy_mj": "mJ"}


@dataclass
class SearchOutcome:
    out: Path
    rows: list[BudgetRow]
    n_evaluations: int
    seconds: float


def budgets_from(cfg_budgets: Any, profile: DeviceProfile) -> dict[str, list[float]]:
    """Budgets per metric: the command line's where given, else the profile's."""
    given = OmegaConf.to_container(cfg_budgets, resolve=True) if cfg_budgets is not None else {}
    if not isinstance(given, dict):
        raise ValueError(f"budgets = {given!r} must map metrics to lists, e.g. budgets.latency_ms=[0.6,0.9]")
    out: dict[str, list[float]] = {}
    for metric, values in given.items():
        if metric not in HARDWARE_TARGETS:
            raise ValueError(f"budgets.{metric} is not a budget metric; allowed: {', '.join(HARDWARE_TARGETS)}")
        if values is not None:
            values = [values] if isinstance(values, int | float) else values
            if not all(isinstance(v, int | float) and v > 0 for v in values):
                raise ValueError(f"budgets.{metric} = {values} must be positive numbers")
            out[metric] = [float(v) for v in values]
    for metric in HARDWARE_TARGETS:
        out.setdefault(metric, list(getattr(profile.budgets, metric)))
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise ValueError(
            f"device {profile.name!r} has no budgets (profile.yaml budgets:) and none were given; "
            "pass e.g. budgets.latency_ms=[0.6,0.9]"
        )
    return out


def check_settings(cfg: DictConfig) -> None:
    """What the config's types do not say (ranges, choices, files), in one line each, before
    anything is loaded or searched."""
    from search.problem import SearchSettings
    from search.storage import storage_kind

    loop = cfg.loop
    check_int("loop.measurements", loop.measurements, 0, "an integer >= 0 (0: the fit-once search)")
    for name in ("initial", "per_budget", "patience"):
        check_int(f"loop.{name}", loop.get(name), 1, none_ok=True)
    if not (isinstance(cfg.measure_latency, bool) or cfg.measure_latency in ("auto", "true", "false")):
        raise UserError(f"measure_latency = {cfg.measure_latency!r} is not allowed; allowed: auto, true, false")
    check_int("bn_calibration_images", cfg.bn_calibration_images, 1)
    for path in prior_paths(loop):
        if not path.is_file():
            raise UserError(f"loop.prior: accuracy table {path} not found")
    SearchSettings(cfg.n_trials, cfg.population_size, cfg.seed)  # its own one-line checks
    if cfg.storage is not None:
        storage_kind(str(cfg.storage))


def predictor_path(cfg: DictConfig, target: str, profile: DeviceProfile, checkpoint: Path) -> Path:
    given = cfg.predictors.get(target)
    if given:
        return Path(given)
    return checkpoint.parent / "predictors" / "acc" if target == "acc" else profile.directory / "predictors" / target


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


@dataclass
class SearchInputs:
    """What one `ofa-search` run works on, loaded and checked before the search starts."""

    profile: DeviceProfile
    checkpoint: Path
    supernet: OFAMobileNetV3
    meta: dict[str, Any]
    metrics: dict[str, Any]  # name -> search.Metric (acc and the hardware targets)
    budgets: list[Any]  # search.Budget, one per budget value
    predictors: dict[str, Any]  # name -> the fitted Predictor behind each metric (its held-out error)

    @property
    def space(self) -> MBV3Space:
        return self.supernet.space


def load_inputs(cfg: DictConfig) -> SearchInputs:
    from search.objectives import Budget, Constraint, from_predictor

    overrides = cfg.get("device_overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else None
    profile = load_profile(cfg.device, overrides=overrides)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    supernet, meta = load_supernet(checkpoint)
    budget_values = budgets_from(cfg.budgets, profile)

    targets = ["acc", *(t for t in HARDWARE_TARGETS if t in budget_values or t == "latency_ms")]
    predictors = {t: load_predictor(predictor_path(cfg, t, profile, checkpoint), supernet.space) for t in targets}
    metrics = {"acc": from_predictor("acc", predictors["acc"], "maximize")}
    for target in targets[1:]:
        metrics[target] = from_predictor(target, predictors[target], "minimize", HARDWARE_TARGETS[target])
    budgets = [Budget(f"{t}<={v:g}", (Constraint(t, v),)) for t, values in budget_values.items() for v in values]
    return SearchInputs(profile, checkpoint, supernet, meta, metrics, budgets, predictors)


def run_engine(cfg: DictConfig, inputs: SearchInputs, console: Console) -> Any:
    """The NSGA-II search on the predictors (a progress bar while it runs); a `SearchResult`."""
    import search

    settings = search.SearchSettings(
        int(cfg.n_trials), int(cfg.population_size), int(cfg.seed), study_name=cfg.study_name, storage=cfg.storage,
        device=inputs.profile.name,
    )  # fmt: skip
    with quiet_optuna(), progress_bar(console, "searching") as on_progress:
        return search.run(inputs.space, list(inputs.metrics.values()), settings, budgets=inputs.budgets,
                          progress=on_progress)  # fmt: skip


def export_choice(cfg: DictConfig, inputs: SearchInputs, row: BudgetRow, arch: ArchConfig, net: nn.Module) -> None:
    """subnets/<budget>/: arch.json + weights.safetensors + model.onnx of one chosen sub-network."""
    with atomic_folder(row.export) as folder:  # a kill mid-export leaves no folder that looks whole
        save_subnet(folder, inputs.space, arch, net, budget=row.budget, limits=row.limits,
                    predicted=row.predicted, measured=row.measured, device=inputs.profile.name)  # fmt: skip
        shape = (inputs.profile.batch_size, inputs.space.in_channels, arch.r, arch.r)
        export_onnx(net, shape, folder / "model.onnx", exporter=cfg.onnx_exporter or inputs.profile.onnx_exporter)


def budget_rows(
    cfg: DictConfig, inputs: SearchInputs, choices: list[Any], measured: Measured, out: Path, tests: dict[str, tuple]
) -> list:
    """One `BudgetRow` per budget (exporting each chosen sub-network when `cfg.export`)."""
    rows = []
    for c in choices:
        limits = c.budget.limits()
        if not c.ok:
            rows.append(BudgetRow(c.budget.name, limits, None, c.message))
            continue
        arch = c.evaluation.config
        key = arch.key()
        folder = out / "subnets" / _slug(c.budget.name)
        test = dict(zip(("acc", "se", "n"), tests[key])) if key in tests else {}
        row = BudgetRow(
            c.budget.name, limits, key, c.message, predicted=dict(c.evaluation.values), measured=measured.of(key),
            test=test, macs=inputs.supernet.count_macs(arch), params=inputs.supernet.count_params(arch),
            export=str(folder) if cfg.export else None,
        )  # fmt: skip
        if cfg.export:
            export_choice(cfg, inputs, row, arch, measured.nets[key])
        rows.append(row)
    return rows


def write_outputs(
    cfg: DictConfig,
    inputs: SearchInputs,
    result: Any,
    rows: list[BudgetRow],
    out: Path,
    extra: dict[str, Any],
    measured_points: list[tuple[float, float]],
) -> None:
    """evaluations.csv, front.csv, report.json, report.md, pareto.png (and W&B when enabled)."""
    columns = ["arch", *inputs.metrics, "feasible", "trial"]
    atomic_write_csv(out / "evaluations.csv", result.rows(), columns)
    atomic_write_csv(out / "front.csv", result.rows(result.front), columns)
    profile, space = inputs.profile, inputs.space
    header = {
        "device": profile.name,
        "backend": f"{profile.backend} {profile.precision}, batch {profile.batch_size}",
        "checkpoint": str(inputs.checkpoint),
        "space": f"{space.name} ({space.fingerprint()})",
        "predictors": {m: str(predictor_path(cfg, m, profile, inputs.checkpoint)) for m in inputs.metrics},
        "evaluations": result.n_evaluations,
        "stopped": result.stopped,
        **extra,
    }
    write_reports(out, rows, header)
    points = [(e.values["latency_ms"], e.values["acc"]) for e in result.evaluations]
    front = [(e.values["latency_ms"], e.values["acc"]) for e in result.front]
    title = f"{profile.name}: {result.n_evaluations} sub-networks evaluated by the predictors"
    pareto_png(out / "pareto.png", points, front, rows, title, measured_points)
    if cfg.wandb.enabled:
        from app.search_wandb import log_search

        log_search(cfg.wandb, OmegaConf.to_container(cfg, resolve=True), out, rows, result)


def run_search(cfg: DictConfig, out: Path, console: Console | None = None, show_table: bool = True) -> SearchOutcome:
    """The `ofa-search` job on a composed `conf/search.yaml` (tests and the pipeline call this);
    `show_table=False` leaves the final per-budget table to the caller."""
    import search

    console = console or make_console()
    start = time.perf_counter()
    check_settings(cfg)
    inputs = load_inputs(cfg)
    trained_on = check_trained_on(inputs.meta, str(cfg.data.name), bool(cfg.get("allow_other_data")))
    profile = inputs.profile
    console.print(
        f"[bold]ofa-search[/] on {profile.name} ({profile.backend} {profile.precision}): supernet "
        f"{inputs.checkpoint} ({inputs.space.name}), {len(inputs.budgets)} budgets, {cfg.n_trials} evaluations"
    )
    dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=inputs.meta["info"].get("seed", 0))
    dm.setup()  # a bad data config stops here, not after the search
    result = run_engine(cfg, inputs, console)
    choices, measured, extra, points = choose_and_measure(cfg, inputs, result, dm, out, console)
    for c in choices:
        if not c.ok:
            console.print(f"[yellow]{c.message}[/]")
    chosen = list(dict.fromkeys(c.evaluation.config for c in choices if c.ok))
    with console.status(f"measuring {len(chosen)} answers on the test split"):
        tests = accuracy_on_test_split(inputs, dm, chosen, int(cfg.bn_calibration_images))
    rows = mark_ties(budget_rows(cfg, inputs, choices, measured, out, tests))
    seconds = time.perf_counter() - start
    extra = {**extra, "seconds": round(seconds, 1), "data": str(cfg.data.name), "trained_on": trained_on}
    write_outputs(cfg, inputs, result, rows, out, extra, points)
    if show_table:
        console.print(console_table(rows, profile.name))
    subnets = ", subnets/" if cfg.export else ""
    console.print(f"written: {out}/report.md, report.json, pareto.png{subnets} ({seconds:.0f} s)")
    if not any(r.ok for r in rows):
        raise search.NoFeasibleArch("; ".join(r.message for r in rows))
    return SearchOutcome(out, rows, result.n_evaluations, seconds)


def choose_and_measure(
    cfg: DictConfig, inputs: SearchInputs, result: Any, dm: ImageDataModule, out: Path, console: Console
) -> tuple[list[Any], Measured, dict[str, Any], list[tuple[float, float]]]:
    """Per budget, the answer and its measured figures: with `loop.measurements` > 0 the best
    sub-network measured in the loop's rounds, else the predictors' choice measured afterwards.
    Also the (latency, validation accuracy) of every sub-network measured, for the plot."""
    if int(cfg.loop.measurements) <= 0:
        choices = result.select(inputs.budgets)
        chosen = list(dict.fromkeys(c.evaluation.config for c in choices if c.ok))
        measured = measure_choices(inputs.profile, inputs.supernet, dm, chosen, cfg, out, console)
        return choices, measured, {"answers": "chosen by the predictors, then measured"}, []
    run = run_measured_loop(cfg, inputs, [e.config for e in result.evaluations], dm, out, console)
    choices = answer_choices(run, inputs)
    chosen = list(dict.fromkeys(c.evaluation.config for c in choices if c.ok))
    with console.status(f"extracting the {len(chosen)} answers"):
        measured = measure_accuracy(inputs.supernet, dm, chosen, int(cfg.bn_calibration_images))
    by_key = {m.key: m for m in run.measurements}
    table = [{"arch": m.key, "acc": m.values["acc"], "latency_ms": m.values.get("latency_ms"),
              "latency_source": run.sources.get(m.key, ""), "round": m.round} for m in run.measurements]  # fmt: skip
    atomic_write_csv(out / "measured.csv", table, ["arch", "acc", "latency_ms", "latency_source", "round"])
    measured.latency_ms = {k: by_key[k].values["latency_ms"] for k in measured.acc
                           if run.sources.get(k) == "measured"}  # fmt: skip
    extra = {
        "answers": "the best measured sub-network meeting each budget (validation split)",
        "measured": len(run.measurements),
        "measured_by_loop": run.n_new,
        "loop": f"{run.rounds} rounds; {run.stopped}",
        "validation_images": len(dm.val_set),
        "test_images": len(dm.test_set) if dm.test_set is not None else 0,
    }
    points = [(m.values["latency_ms"], m.values["acc"]) for m in run.measurements if "latency_ms" in m.values]
    return choices, measured, extra, points


@hydra_command("search")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        with torch_threads(cfg.threads):
            run_search(cfg, out)
    except KeyError as exc:  # a missing config key: one line, not a traceback
        raise UserError(f"missing setting {exc}") from None


if __name__ == "__main__":
    main()
