"""`ofa-fit`: fit a latency / power / energy / accuracy predictor from a measurement table. A
Hydra shell (conf/fit.yaml, conf/fit_models/) over `predictors.fit.fit_predictor`; the
progress bar, the cross-validation and held-out tables are drawn here."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.progress import progress_bar
from app.shell import hydra_command, make_console
from ofa.paths import HW_PROFILES_DIR
from predictors.fit import FitResult, FitSettings, fit_predictor
from predictors.transfer_fit import TransferFitResult, TransferFitSettings, fit_transferred

USAGE = "ofa-fit table=<csv> target=<column> out=<dir> [space=<name>] [sources=[<device or table>,...]]"


def settings_from(cfg: DictConfig) -> FitSettings:
    """The `FitSettings` of a composed conf/fit.yaml."""
    return FitSettings(
        split_seed=int(cfg.split_seed),
        test_fraction=float(cfg.test_fraction),
        test_table=cfg.get("test_table"),
        model=OmegaConf.to_container(cfg.model) if OmegaConf.is_list(cfg.model) else str(cfg.model),
        lut=cfg.get("lut"),
        transform=str(cfg.transform),
        cv_folds=int(cfg.cv_folds),
        seed=int(cfg.seed),
        bound=bool(cfg.get("bound", False)),
        model_configs=OmegaConf.to_container(cfg.models, resolve=True) if cfg.get("models") else {},
        grid=OmegaConf.to_container(cfg.grid, resolve=True) if cfg.get("grid") else {},
    )


def fit_from_config(
    cfg: DictConfig, out: str | os.PathLike | None = None, console: Console | None = None
) -> FitResult | TransferFitResult:
    """Run `fit_predictor` from the `conf/fit.yaml` config (`out` when the config has none);
    with `sources`, `fit_transferred` (a new device from a few rows plus devices already profiled)."""
    console = console or make_console()
    for key in ("table", "target"):
        if cfg.get(key) in (None, ""):
            raise ValueError(f"{key} is required: {USAGE}")
    out = cfg.get("out") or out
    if not out:
        raise ValueError(f"out is required: {USAGE}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out = {out} is a file; out is the folder predictor.json is written into")
    space = None if cfg.get("space") in (None, "") else str(cfg.space)
    if cfg.get("sources"):
        return transfer_from_config(cfg, out, space, console)
    with progress_bar(console, "cross-validating candidates, then fitting the chosen one") as on_progress:
        result = fit_predictor(cfg.table, str(cfg.target), out, settings_from(cfg), space=space,
                               on_progress=on_progress)  # fmt: skip
    report_fit(console, result)
    return result


def report_fit(console: Console, result: FitResult) -> None:
    """What was fitted, the CV table, the held-out table and the files written."""
    m = result.metrics
    console.print(
        f"[bold]{escape(m['target'])}[/] of {m['table']} ({result.n_rows} rows, space {m['space']}): "
        f"{m['n_train']} training, {m['n_test']} held-out rows; "
        f"candidates: {', '.join(c.name for c in result.candidates)}"
    )
    if result.cv:
        console.print(_cv_table(result))
    console.print(_held_out_table(result.chosen.name, m, m["baseline_onehot_ridge"]))
    for name, p in result.paths.items():
        console.print(f"written: {p}" + ("" if name != "predictor" else escape(f" ({result.predictor.describe()})")))


def _cv_table(result: FitResult) -> Table:
    cv = Table(title=f"{len(result.cv[0].folds)}-fold cross-validation on the training rows")
    for col in ("candidate", "model", "tau", "tau sd", "MAPE %", "within 10%", "seconds"):
        cv.add_column(col, justify="left" if col in ("candidate", "model") else "right")
    for s in result.cv:
        mark = " *" if s.candidate == result.chosen else ""
        cv.add_row(
            s.candidate.name + mark,
            escape(s.description),
            f"{s.mean('kendall_tau'):.4f}",
            f"{s.std('kendall_tau'):.4f}",
            f"{s.mean('mape'):.2f}",
            f"{s.mean('within_10pct'):.3f}",
            f"{s.seconds:.1f}",
        )
    return cv


def _held_out_table(chosen: str, held_out: Mapping[str, float], baseline: Mapping[str, float]) -> Table:
    held = Table(title=f"held-out rows (n_train {held_out['n_train']}, n_test {held_out['n_test']})")
    for col in ("predictor", "tau", "spearman", "RMSE", "MAPE %", "within 5%", "within 10%"):
        held.add_column(col, justify="left" if col == "predictor" else "right")
    for name, m in ((f"{chosen} (chosen)", held_out), ("one-hot ridge (baseline)", baseline)):
        held.add_row(
            name,
            f"{m['kendall_tau']:.4f}",
            f"{m['spearman']:.4f}",
            f"{m['rmse']:.4g}",
            f"{m['mape']:.2f}",
            f"{m['within_5pct']:.3f}",
            f"{m['within_10pct']:.3f}",
        )
    return held


def transfer_from_config(
    cfg: DictConfig, out: str | os.PathLike, space: str | None, console: Console
) -> TransferFitResult:
    """`fit_transferred` from conf/fit.yaml's `sources`, `transfer_pool`, `profiles_dir`, `test_table`, `seed`."""
    sources = cfg.sources
    names = [str(s) for s in (OmegaConf.to_container(sources) if OmegaConf.is_list(sources) else [sources])]
    settings = TransferFitSettings(
        sources=names,
        profiles_dir=cfg.get("profiles_dir") or HW_PROFILES_DIR,
        seed=int(cfg.seed),
        pool=int(cfg.get("transfer_pool") or 4000),
        test_table=cfg.get("test_table"),
    )
    with progress_bar(console, "fitting the sources' predictors, the transfer, then distilling it") as on_progress:
        result = fit_transferred(cfg.table, str(cfg.target), out, settings, space, on_progress)
    report_transfer(console, result)
    return result


def report_transfer(console: Console, result: TransferFitResult) -> None:
    """The sources, the candidates leave-one-out weighed, the held-out scores, the files written."""
    m = result.metrics
    console.print(
        f"[bold]{escape(m['target'])}[/] of {m['table']} ({result.n_rows} rows, space {m['space']}) "
        f"transferred from: " + "; ".join(escape(f"{s['name']} ({s['kind']}, {s['model']})") for s in m["sources"])
    )
    weights = Table(title="candidates, weighted by their leave-one-out error on the measured rows")
    for col in ("candidate", "alpha", "LOO MSE (log)", "weight"):
        weights.add_column(col, justify="left" if col == "candidate" else "right")
    for c in result.transfer.candidates:
        weights.add_row(c["name"], f"{c['alpha']:g}", f"{c['loo_mse_log']:.4g}", f"{c['weight']:.3f}")
    console.print(weights)
    held = Table(title=f"{m['evaluated_on']} (n_train {m['n_train']}, n_test {m['n_test']})")
    for col in ("predictor", "tau", "spearman", "MAPE %", "within 10%"):
        held.add_column(col, justify="left" if col == "predictor" else "right")
    rows = [("transferred (chosen)", m), ("no sources (one-device fallback)", m.get("without_sources")),
            ("one-hot ridge (baseline)", m.get("baseline_onehot_ridge"))]  # fmt: skip
    for name, r in rows:
        if r:
            held.add_row(name, f"{r['kendall_tau']:.4f}", f"{r['spearman']:.4f}", f"{r['mape']:.2f}",
                         f"{r['within_10pct']:.3f}")  # fmt: skip
    console.print(held)
    a = m["distillation_agreement"]
    console.print(
        f"distilled into {escape(result.predictor.describe())} on {m['distillation_pool']} sub-networks: "
        f"agreement tau {a['kendall_tau']:.4f}, MAPE {a['mape']:.2f} %"
    )
    for p in result.paths.values():
        console.print(f"written: {p}")


def _task(cfg: DictConfig) -> None:
    fit_from_config(cfg, out=HydraConfig.get().runtime.output_dir, console=make_console())


main = hydra_command("fit")(_task)

if __name__ == "__main__":
    main()
