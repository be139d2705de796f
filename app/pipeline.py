"""The main job (`ofa-pipeline`, the README's first command): the whole pipeline in one run folder.

train the supernet (with `supernet_file=`: import or copy a given one, no training) -> evaluate
sampled sub-networks (accuracy table) -> profile sub-networks on this CPU (latency table) -> fit
latency and accuracy predictors -> search the device's budgets and export the chosen
sub-networks, ending with a table per budget (predicted vs measured) and the Pareto plot. Each
stage lives in `<run_dir>/<stage>/` and is skipped when its output is current (app/stages.py):
rerunning is cheap, and a changed config reruns what depends on it.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from app.fit import report_fit, settings_from
from app.import_ofa import check_same_space, import_to
from app.progress import progress_bar, progress_bars
from app.search_report import BudgetRow, console_table
from app.shell import compose, hydra_command, make_console, torch_threads
from app.stages import Stage, StageRunner
from app.train import train
from ofa.archtable import read_csv
from ofa.checkpoint import load_supernet, read_supernet_metadata, resolve_checkpoint
from ofa.data.datamodule import ImageDataModule
from ofa.errors import check_int
from ofa.importer import file_sha256
from ofa.io import atomic_write_bytes
from ofa.networks import OFAMobileNetV3
from ofa.paths import known_supernets
from ofa.space import MBV3Space
from ofa.training.eval_subnets import check_eval_settings, eval_archs, evaluate_subnets
from predictors.candidates import parse_models
from predictors.fit import fit_predictor
from predictors.measure.profile import load_profile
from predictors.profiling import profile_subnets
from predictors.sampling import check_spread_count, sample_spread

# The parts of the config the trained supernet depends on (logging, threads and checkpoint
# cadence do not change the result).
TRAIN_KEYS = (
    "seed", "supernet", "data", "schedule", "trainer", "callbacks", "optim", "kd", "validation", "epochs_per_phase",
)  # fmt: skip


def _plain(cfg: DictConfig, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    return data if keys is None else {k: data.get(k) for k in keys}


def _space_of(cfg: DictConfig):
    return hydra.utils.instantiate(cfg.supernet).space


def supernet_file(cfg: DictConfig) -> Path | None:
    """`cfg.supernet_file` as a file: a supernet.safetensors, the one in an ofa-train run folder,
    or an OFA `.pth` (anything not .safetensors); None when the pipeline trains."""
    given = cfg.get("supernet_file")
    if not given:
        return None
    path = Path(str(given)).expanduser()
    if path.is_dir():
        return resolve_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"supernet_file {path} does not exist; allowed: a supernet.safetensors, an ofa-train run folder "
            "or an OFA .pth file"
        )
    return path


def import_stage(cfg: DictConfig, source: Path, folder: Path) -> Stage:
    """The train stage when `supernet_file` is set: no training; the file (an OFA `.pth`
    imported) becomes `<run_dir>/train/supernet.safetensors`. Its digest is the file's content
    and the configured space, which the file's must equal."""
    if folder.resolve() in source.resolve().parents:
        raise ValueError(f"supernet_file {source} lies in the train stage's own folder {folder}; copy it elsewhere")
    space = _space_of(cfg)
    ours = source.suffix == ".safetensors"
    config = {"supernet_file": {"sha256": file_sha256(source), "format": "ofa-hwnas" if ours else "ofa .pth"},
              "space": space.fingerprint()}  # fmt: skip

    def run(folder: Path) -> dict[str, Any]:
        out = folder / "supernet.safetensors"
        if ours:
            check_same_space(read_supernet_metadata(source)["space"], space, source.name)
            atomic_write_bytes(out, source.read_bytes())
        else:
            import_to(source, out, space)
        return {"supernet": str(out), "source": str(source), "sha256": config["supernet_file"]["sha256"],
                "space": space.name, "trained": False}  # fmt: skip

    return Stage("train", config, run, code=("ofa",))


def train_stage(cfg: DictConfig, runner: StageRunner) -> Stage:
    source = supernet_file(cfg)
    if source is not None:
        return import_stage(cfg, source, runner.folder("train"))

    def run(folder: Path) -> dict[str, Any]:
        result = train(cfg, folder)
        return {"supernet": str(folder / "supernet.safetensors"), "metrics": result.metrics,
                "global_step": result.global_step}  # fmt: skip

    return Stage("train", _plain(cfg, TRAIN_KEYS), run, code=("ofa", "app.train"))


def eval_stage(cfg: DictConfig, runner: StageRunner) -> Stage:
    settings = _plain(cfg.stages.eval)
    check_eval_settings(settings["n_subnets"], settings["bn_calibration_images"], "stages.eval.")

    def run(folder: Path) -> dict[str, Any]:
        supernet, meta = load_supernet(runner.folder("train") / "supernet.safetensors")
        # The split seed the supernet was trained with; an imported one has none (0, as ofa-search reads it).
        dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=meta["info"].get("seed", 0))
        archs = eval_archs(supernet.space, settings["n_subnets"], settings["seed"])
        bars = ("evaluating sub-networks", "validation batches")
        with progress_bars(runner.console, *bars) as (on_progress, on_batch):
            rows = evaluate_subnets(supernet, dm, archs, folder / "accuracy.csv", settings["bn_calibration_images"],
                                    on_progress, on_batch)  # fmt: skip
        accs = sorted(float(r["acc"]) for r in rows)
        return {"table": str(folder / "accuracy.csv"), "n": len(rows), "acc_min": accs[0], "acc_max": accs[-1]}

    # With supernet_file set, the train stage's digest does not cover the data: this one does.
    config = {**settings, "data": _plain(cfg.data)} if cfg.get("supernet_file") else settings
    return Stage("eval", config, run, needs=("train",), code=("ofa",))


def profile_overrides(cfg: DictConfig, space: MBV3Space) -> dict[str, Any]:
    """`stages.profile.overrides`, adapted when `space` is not the device profile's own (its
    `supernet:`, e.g. cpu-ort's mnist): the rows then name this space's config, and latencies are
    in units of this run's first reference sub-network, not of `timing.reference_ms` (the floor
    of the profile's own space's reference, meaningless for another space's), unless set here."""
    settings = _plain(cfg.stages.profile)
    overrides = copy.deepcopy(settings.get("overrides") or {})
    own = load_profile(settings["device"], overrides=overrides or None)
    if hydra.utils.instantiate(OmegaConf.load(own.supernet_config_path())).space.fingerprint() == space.fingerprint():
        return overrides
    preset = cfg.supernet.get("preset")
    if preset in known_supernets():
        overrides.setdefault("supernet", preset)
    if own.timing.normalize == "reference":
        overrides.setdefault("timing", {}).setdefault("reference_ms", None)
    return overrides


def anchored(device: str, overrides: dict[str, Any], table: Path) -> dict[str, Any]:
    """`overrides` with `timing.reference_ms` pinned to the anchor of the run's own table when
    the profile normalises to the reference without one: the search then measures latency in
    the units its latency predictor was fitted in (not those of the device's shipped table)."""
    timing = load_profile(device, overrides=overrides or None).timing
    if timing.normalize != "reference" or timing.reference_ms is not None:
        return overrides
    anchor = next((row.get("ref_anchor_ms") for row in read_csv(table, "measurement table").rows), None)
    if not anchor:
        return overrides
    return {**overrides, "timing": {**(overrides.get("timing") or {}), "reference_ms": float(anchor)}}


def profile_stage(cfg: DictConfig, runner: StageRunner) -> Stage:
    settings = _plain(cfg.stages.profile)
    check_spread_count(settings["n_subnets"], "stages.profile.n_subnets")  # before training, not after it
    space = _space_of(cfg)
    profile = load_profile(settings["device"], overrides=profile_overrides(cfg, space) or None)
    # Latency depends on the architecture only: the profile does not wait for (or rerun after) training.
    config = {**settings, "profile": repr(profile), "space": space.fingerprint()}

    def run(folder: Path) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings["seed"])  # latency does not depend on the weights; seeded all the same
            supernet = OFAMobileNetV3(space=space).eval()
        archs = sample_spread(space, settings["n_subnets"], settings["seed"])
        with progress_bar(runner.console, f"measuring sub-networks on {profile.name}") as on_progress:
            report = profile_subnets(
                profile, supernet, archs, output=folder / "measurements.csv", workdir=folder / "cache",
                seed=settings["seed"], on_progress=on_progress,
            )  # fmt: skip
        return {"table": str(report.output), "n": report.total, "device": profile.name,
                "budgets_latency_ms": list(profile.budgets.latency_ms)}  # fmt: skip

    return Stage("profile", config, run, code=("ofa", "predictors"))


def fit_stage(cfg: DictConfig, runner: StageRunner) -> Stage:
    settings = _plain(cfg.stages.fit)
    for key in ("latency_model", "accuracy_model"):
        try:
            parse_models(settings[key])
        except ValueError as e:
            raise ValueError(f"stages.fit.{e}") from None

    def fit(folder: Path, table: str, target: str, preset: str, model: Any) -> dict[str, Any]:
        fit_cfg = compose("fit", overrides=[f"fit_models={preset}"])
        OmegaConf.set_struct(fit_cfg, False)
        fit_cfg.merge_with({"model": model, "seed": settings["seed"]})
        with progress_bar(runner.console, f"fitting the {target} predictor") as on_progress:
            result = fit_predictor(table, target, folder, settings_from(fit_cfg), _space_of(cfg), on_progress)
        report_fit(runner.console, result)
        keys = ("model", "kendall_tau", "spearman", "rmse", "mape", "within_5pct", "within_10pct", "n_train", "n_test")
        return {"dir": str(folder), **{k: result.metrics[k] for k in keys}}

    def run(folder: Path) -> dict[str, Any]:
        latency = fit(folder / "latency_ms", runner.run_dir / "profile" / "measurements.csv", "latency_ms",
                      "latency", settings["latency_model"])  # fmt: skip
        accuracy = fit(folder / "acc", runner.run_dir / "eval" / "accuracy.csv", "acc", "accuracy",
                       settings["accuracy_model"])  # fmt: skip
        return {"latency_ms": latency, "acc": accuracy}

    return Stage("fit", settings, run, needs=("eval", "profile"), code=("predictors", "app.fit"))


def budgets_from_profiled(table: Path, quantiles: list[float]) -> list[float]:
    """Latency budgets at quantiles of the latencies profiled in this run: on any machine they
    fall inside the range this CPU can meet (a profile's fixed budgets are one machine's)."""
    import numpy as np

    latencies = np.array([float(r["latency_ms"]) for r in read_csv(table, "measurement table").rows])
    return [round(float(np.quantile(latencies, q)), 3) for q in quantiles]


def check_search_settings(settings: dict[str, Any]) -> None:
    """The search stage's budgets and counts, in one line each, before any stage runs."""
    given = settings["budgets_latency_ms"]
    if given is not None and (not isinstance(given, list) or not given or not all(_positive(v) for v in given)):
        raise ValueError(f"stages.search.budgets_latency_ms = {given!r} is not allowed; allowed: null or a list of "
                         "positive numbers (ms), e.g. [0.4,0.6]")  # fmt: skip
    quantiles = settings["budget_quantiles"]
    if not isinstance(quantiles, list) or not quantiles or not all(_positive(q) and q < 1 for q in quantiles):
        raise ValueError(f"stages.search.budget_quantiles = {quantiles!r} is not allowed; allowed: a list of numbers "
                         "between 0 and 1, e.g. [0.25,0.5,0.75]")  # fmt: skip
    for name, low in (("loop_measurements", 0), ("n_trials", 1), ("population_size", 2), ("bn_calibration_images", 1)):
        check_int(f"stages.search.{name}", settings[name], low)


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def search_stage(cfg: DictConfig, runner: StageRunner) -> Stage:
    settings = _plain(cfg.stages.search)
    profile_settings = _plain(cfg.stages.profile)
    check_search_settings(settings)

    def run(folder: Path) -> dict[str, Any]:
        from app.search import run_search

        budgets = settings["budgets_latency_ms"] or budgets_from_profiled(
            runner.run_dir / "profile" / "measurements.csv", settings["budget_quantiles"]
        )
        search_cfg = compose("search", overrides=[f"device={profile_settings['device']}"])
        OmegaConf.set_struct(search_cfg, False)
        search_cfg.merge_with({
            "checkpoint": str(runner.folder("train") / "supernet.safetensors"),
            "device_overrides": anchored(profile_settings["device"], profile_overrides(cfg, _space_of(cfg)),
                                         runner.run_dir / "profile" / "measurements.csv"),
            "predictors": {"acc": str(runner.folder("fit") / "acc"),
                           "latency_ms": str(runner.folder("fit") / "latency_ms")},
            "budgets": {"latency_ms": budgets},
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "loop": {"measurements": settings["loop_measurements"],
                     "prior": [str(runner.folder("eval") / "accuracy.csv")]},
            **{k: settings[k] for k in ("n_trials", "population_size", "seed", "bn_calibration_images")},
        })  # fmt: skip
        outcome = run_search(search_cfg, folder, runner.console, show_table=False)
        return {"report": str(folder / "report.json"), "pareto": str(folder / "pareto.png"),
                "evaluations": outcome.n_evaluations, "budgets_latency_ms": budgets}  # fmt: skip

    # The search stage's code reaches across the app (loop, measurement, report): all of it.
    return Stage("search", settings, run, needs=("train", "eval", "fit"), code=("search", "predictors", "ofa", "app"))


def predictor_table(fit_summary: dict[str, Any]) -> Table:
    table = Table(title="predictors (held-out quality)")
    for col in ("target", "model", "Kendall tau", "Spearman", "MAPE %", "within 10%", "train / test"):
        table.add_column(col, justify="left" if col in ("target", "model") else "right")
    for target, m in fit_summary.items():
        table.add_row(
            target,
            str(m["model"]),
            f"{m['kendall_tau']:.3f}",
            f"{m['spearman']:.3f}",
            f"{m['mape']:.2f}",
            f"{m['within_10pct']:.2f}",
            f"{m['n_train']} / {m['n_test']}",
        )
    return table


def run_pipeline(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    console = console or make_console()
    runner = StageRunner(Path(run_dir), console)
    start = time.perf_counter()
    summaries: dict[str, Any] = {}
    # Every stage is built (its config checked: device, models, budgets) before the first runs,
    # so a mistake in the last stage's settings does not wait for training to be reported.
    stages = [make(cfg, runner) for make in (train_stage, eval_stage, profile_stage, fit_stage, search_stage)]
    with torch_threads(cfg.get("threads")):
        for stage in stages:
            summaries[stage.name] = runner.run(stage)
    console.print(predictor_table(summaries["fit"]))
    report = json.loads(Path(summaries["search"]["report"]).read_text())
    rows = [BudgetRow(**{k: v for k, v in b.items()}) for b in report["budgets"]]
    console.print(console_table(rows, report["device"]))
    console.print(f"Pareto plot: {summaries['search']['pareto']}")
    timings = Table(title=f"pipeline stages ({runner.run_dir})")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for name, seconds in runner.timings.items():
        timings.add_row(name, "skipped (current)" if seconds == 0 else f"{seconds:.0f}")
    timings.add_row("total", f"{time.perf_counter() - start:.0f}")
    console.print(timings)
    return summaries


@hydra_command("pipeline")
def main(cfg: DictConfig) -> None:
    run_pipeline(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
