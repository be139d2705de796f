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
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.shell import UserError, hydra_command, make_console
from ofa.checkpoint import load_supernet
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import count_correct, recalibrate_bn
from ofa.export import export_onnx, save_subnet
from ofa.io import atomic_write_csv
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig
from ofa.training.eval_subnets import resolve_checkpoint
from predictors.measure.optional import MissingPackageError
from predictors.measure.profile import DeviceProfile, load_profile
from predictors.predictor import load_predictor
from search.report import BudgetRow, console_table, pareto_png, write_reports

HARDWARE_TARGETS = {"latency_ms": "ms", "power_w": "W", "energy_mj": "mJ"}
CPU_BACKENDS = ("onnxruntime-cpu", "torch-cpu")


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


def _predictor_path(cfg: DictConfig, target: str, profile: DeviceProfile, checkpoint: Path) -> Path:
    given = cfg.predictors.get(target)
    if given:
        return Path(given)
    return checkpoint.parent / "predictors" / "acc" if target == "acc" else profile.directory / "predictors" / target


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def measure_accuracy(supernet: OFAMobileNetV3, dm: ImageDataModule, archs: list[ArchConfig], n_calib: int):
    """Validation accuracy of each arch's extracted, BN-recalibrated sub-network (and the nets)."""
    images = dm.calibration_images(n_calib)
    batches = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    nets, accs = [], []
    for arch in archs:
        net = recalibrate_bn(supernet.extract_subnet(arch), images, arch.r)
        correct, total = count_correct(net, batches, arch.r)
        nets.append(net)
        accs.append(correct / total)
    return nets, accs


def measure_latency(
    profile: DeviceProfile, supernet: OFAMobileNetV3, archs: list[ArchConfig], out: Path, mode: str, console: Console
) -> dict[str, float]:
    """Measured latency per arch key with the device profile (empty when it cannot run here)."""
    from predictors.profiling import profile_subnets, with_table_anchor

    if mode is False or mode == "false" or not archs:
        return {}
    if mode == "auto" and profile.backend not in CPU_BACKENDS and not torch.cuda.is_available():
        console.print(f"[yellow]latency not measured: backend {profile.backend} needs a GPU, none here[/]")
        return {}
    try:
        profile = with_table_anchor(profile)  # in the units of the table the predictor was fitted on
        report = profile_subnets(profile, supernet, archs, output=out / "measured_latency.csv",
                                 workdir=out / "cache", console=console)  # fmt: skip
    except MissingPackageError as exc:
        if mode == "auto":
            console.print(f"[yellow]latency not measured: {exc}[/]")
            return {}
        raise
    import csv

    with open(report.output, newline="") as f:
        return {ArchConfig.from_csv_fields(r).key(): float(r["latency_ms"]) for r in csv.DictReader(f)}


def run_search(cfg: DictConfig, out: Path, console: Console | None = None, show_table: bool = True) -> SearchOutcome:
    """The `ofa-search` job on a composed `conf/search.yaml` (tests and the pipeline call this);
    `show_table=False` leaves the final per-budget table to the caller."""
    import search
    from search.objectives import Budget, Constraint, from_predictor

    console = console or make_console()
    start = time.perf_counter()
    overrides = cfg.get("device_overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else None
    profile = load_profile(cfg.device, overrides=overrides)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    supernet, meta = load_supernet(checkpoint)
    space = supernet.space
    budget_values = budgets_from(cfg.budgets, profile)

    metrics = {"acc": from_predictor("acc", load_predictor(_predictor_path(cfg, "acc", profile, checkpoint), space),
                                     "maximize")}  # fmt: skip
    for target, unit in HARDWARE_TARGETS.items():
        if target in budget_values or target == "latency_ms":
            path = _predictor_path(cfg, target, profile, checkpoint)
            metrics[target] = from_predictor(target, load_predictor(path, space), "minimize", unit)
    budgets = [
        Budget(f"{target}<={v:g}", (Constraint(target, v),)) for target, values in budget_values.items() for v in values
    ]
    objectives = list(metrics.values())
    console.print(
        f"[bold]ofa-search[/] on {profile.name} ({profile.backend} {profile.precision}): supernet {checkpoint} "
        f"({space.name}), {len(budgets)} budgets, {cfg.n_trials} evaluations"
    )
    columns = (TextColumn("searching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("search", total=int(cfg.n_trials))
        result = search.run(
            space, objectives, [], int(cfg.n_trials), int(cfg.population_size), int(cfg.seed),
            storage=cfg.storage, budgets=budgets, study_name=cfg.study_name,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )  # fmt: skip
    choices = result.select(budgets)
    atomic_write_csv(out / "evaluations.csv", result.rows(), ["arch", *metrics, "feasible", "trial"])
    atomic_write_csv(out / "front.csv", result.rows(result.front), ["arch", *metrics, "feasible", "trial"])

    chosen = list(dict.fromkeys(c.evaluation.config for c in choices if c.ok))
    dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=meta["info"].get("seed", 0))
    with console.status(f"measuring the accuracy of {len(chosen)} chosen sub-networks"):
        nets, accs = measure_accuracy(supernet, dm, chosen, int(cfg.bn_calibration_images)) if chosen else ([], [])
    measured_acc = {a.key(): acc for a, acc in zip(chosen, accs)}
    net_of = {a.key(): n for a, n in zip(chosen, nets)}
    measured_lat = measure_latency(profile, supernet, chosen, out, cfg.measure_latency, console)

    rows = []
    for c in choices:
        limits = c.budget.limits()
        if not c.ok:
            console.print(f"[yellow]{c.message}[/]")
            rows.append(BudgetRow(c.budget.name, limits, None, c.message))
            continue
        arch: ArchConfig = c.evaluation.config
        key = arch.key()
        measured = {"acc": measured_acc[key]}
        if key in measured_lat:
            measured["latency_ms"] = measured_lat[key]
        folder = out / "subnets" / _slug(c.budget.name)
        row = BudgetRow(
            c.budget.name, limits, key, c.message, predicted=dict(c.evaluation.values), measured=measured,
            macs=supernet.count_macs(arch), params=supernet.count_params(arch),
            export=str(folder) if cfg.export else None,
        )  # fmt: skip
        if cfg.export:
            save_subnet(folder, space, arch, net_of[key], budget=c.budget.name, limits=limits,
                        predicted=row.predicted, measured=measured, device=profile.name)  # fmt: skip
            shape = (profile.batch_size, space.in_channels, arch.r, arch.r)
            exporter = cfg.onnx_exporter or profile.onnx_exporter
            export_onnx(net_of[key], shape, folder / "model.onnx", exporter=exporter)
        rows.append(row)

    seconds = time.perf_counter() - start
    header = {
        "device": profile.name,
        "backend": f"{profile.backend} {profile.precision}, batch {profile.batch_size}",
        "checkpoint": str(checkpoint),
        "space": f"{space.name} ({space.fingerprint()})",
        "predictors": {m: str(_predictor_path(cfg, m, profile, checkpoint)) for m in metrics},
        "evaluations": result.n_evaluations,
        "stopped": result.stopped,
        "seconds": round(seconds, 1),
    }
    write_reports(out, rows, header)
    lat = "latency_ms"
    pareto_png(
        out / "pareto.png",
        [(e.values[lat], e.values["acc"]) for e in result.evaluations],
        [(e.values[lat], e.values["acc"]) for e in result.front],
        rows,
        f"{profile.name}: {result.n_evaluations} sub-networks evaluated by the predictors",
    )
    if cfg.wandb.enabled:
        _log_wandb(cfg, out, rows, result)
    if show_table:
        console.print(console_table(rows, profile.name))
    console.print(f"written: {out}/report.md, report.json, pareto.png, subnets/ ({seconds:.0f} s)")
    if not any(r.ok for r in rows):
        raise search.NoFeasibleArch("; ".join(r.message for r in rows))
    return SearchOutcome(out, rows, result.n_evaluations, seconds)


def _log_wandb(cfg: DictConfig, out: Path, rows: list[BudgetRow], result: Any) -> None:
    """The per-budget table, the evaluated set as a scatter and the Pareto plot (offline unless logged in)."""
    import wandb

    from ofa.training.loggers import wandb_logged_in

    mode = cfg.wandb.mode
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"wandb.mode = {mode!r} is not allowed; allowed: auto, online, offline")
    mode = ("online" if wandb_logged_in() else "offline") if mode == "auto" else mode
    run = wandb.init(project=cfg.wandb.project, dir=str(out), mode=mode, job_type="search",
                     config=OmegaConf.to_container(cfg, resolve=True))  # fmt: skip
    try:
        cols = ["budget", "arch", "acc_pred", "acc_meas", "latency_ms_pred", "latency_ms_meas", "macs"]
        table = wandb.Table(columns=cols)
        for r in rows:
            if r.ok:
                table.add_data(r.budget, r.arch, r.predicted.get("acc"), r.measured.get("acc"),
                               r.predicted.get("latency_ms"), r.measured.get("latency_ms"), r.macs)  # fmt: skip
        points = [[e.values["latency_ms"], e.values["acc"]] for e in result.evaluations]
        evaluated = wandb.Table(columns=["latency_ms", "acc"], data=points)
        scatter = wandb.plot.scatter(evaluated, "latency_ms", "acc", title="predicted latency vs accuracy")
        pareto = wandb.Image(str(out / "pareto.png"))
        run.log({"search/choices": table, "search/evaluated": scatter, "search/pareto": pareto})
    finally:
        run.finish()


@hydra_command("search")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        run_search(cfg, out)
    except KeyError as exc:  # a missing config key: one line, not a traceback
        raise UserError(f"missing setting {exc}") from None


if __name__ == "__main__":
    main()
