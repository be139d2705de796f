"""Fit a predictor from a measurement table: candidates scored by cross-validation on the
training rows, the best refitted and scored on held-out rows, saved with its metrics and a
calibration plot. `ofa-fit` (config `conf/fit.yaml`) is a thin shell over `fit_predictor`.

The split is grouped by sub-network, so repeated measurements of one config never sit on
both sides: groups (configs, in order of first appearance) are shuffled by
`numpy.random.default_rng(split_seed)` and the first `round(test_fraction * n)` rows' worth
go to the test side. With one row per config that is `permutation(n)[:n_test]`.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table as RichTable

from app.shell import hydra_command, make_console
from ofa.io import atomic_write_json
from ofa.space import MBV3Space, get_space
from predictors.features import FEATURE_VERSION, ArchArrays
from predictors.metrics import METRIC_KEYS, calibration_plot, regression_metrics
from predictors.models import MODELS, build_model
from predictors.predictor import TRANSFORMS, Predictor, json_safe
from predictors.table import read_lut, read_table

MODEL_CHOICES = ("auto", *MODELS)
BASELINE = {"kind": "ridge", "config": {"feature_set": "onehot", "alpha": 1.0, "robust": False}, "transform": "none"}


@dataclass(frozen=True)
class Candidate:
    """One model kind, its hyper-parameters and its target transform."""

    kind: str
    config: Mapping[str, Any]
    transform: str
    label: str = ""  # the grid values that tell it apart from its siblings

    @property
    def name(self) -> str:
        return "-".join(p for p in (self.kind, self.label, "log" if self.transform == "log" else "") if p)


@dataclass
class CVScore:
    candidate: Candidate
    description: str
    folds: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def mean(self, key: str) -> float:
        values = [f[key] for f in self.folds if np.isfinite(f[key])]
        return float(np.mean(values)) if values else float("nan")

    def std(self, key: str) -> float:
        values = [f[key] for f in self.folds if np.isfinite(f[key])]
        return float(np.std(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.candidate.name,
            "description": self.description,
            "kendall_tau": self.mean("kendall_tau"),
            "kendall_tau_std": self.std("kendall_tau"),
            "mape": self.mean("mape"),
            "within_10pct": self.mean("within_10pct"),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class FitResult:
    predictor: Predictor
    metrics: dict[str, Any]  # what metrics.json holds
    cv: list[CVScore]
    paths: dict[str, Path]


def parse_models(model: str | Sequence[str]) -> list[str]:
    """`auto`, one kind, or a comma-separated list of kinds."""
    kinds = [m.strip() for m in (model.split(",") if isinstance(model, str) else model) if str(m).strip()]
    if not kinds:
        raise ValueError(f"model is empty; allowed: {', '.join(MODEL_CHOICES)}")
    for k in kinds:
        if k not in MODEL_CHOICES:
            raise ValueError(f"model = {k!r} is not allowed; allowed: {', '.join(MODEL_CHOICES)}")
    return kinds


def make_candidates(
    kinds: Sequence[str],
    y: np.ndarray,
    transform: str,
    model_configs: Mapping[str, Mapping[str, Any]],
    have_lut: bool,
    grid: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
) -> list[Candidate]:
    """The candidates CV chooses between: each kind with its `model_configs` entry, once per
    combination of the values listed in `grid[kind]`, and per target transform.
    `transform=auto`: with positive targets ridge is tried on the raw and the log target
    (costs add up per layer, so raw suits a linear model); the trees, which start from a ridge
    fit, take the raw target; the MLP the log target (positive predictions, relative errors);
    the LUT is always raw."""
    if transform not in ("auto", *TRANSFORMS):
        raise ValueError(f"transform = {transform!r} is not allowed; allowed: auto, {', '.join(TRANSFORMS)}")
    positive = bool(np.all(y > 0))
    if transform == "log" and not positive:
        raise ValueError("transform = 'log' needs positive targets; the table has values <= 0 (use transform=none)")
    if "auto" in kinds:
        kinds = [k for k in MODELS if k != "lut" or have_lut]
    if "lut" in kinds and not have_lut:
        raise ValueError("model = 'lut' needs a lookup table: pass lut=<lut.csv>")
    out = []
    for kind in dict.fromkeys(kinds):
        if kind == "lut":
            options = ["none"]
        elif transform != "auto":
            options = [transform]
        elif not positive:
            options = ["none"]
        else:
            options = {"ridge": ["none", "log"], "gbt": ["none"]}.get(kind, ["log"])
        axes = {k: list(v) for k, v in (grid or {}).get(kind, {}).items()}
        for values in itertools.product(*axes.values()):
            config = {**model_configs.get(kind, {}), **dict(zip(axes, values))}
            label = "-".join(str(v) for v in values)
            out += [Candidate(kind, config, t, label) for t in options]
    return out


def group_split(keys: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), grouped by `keys`, shuffled by `default_rng(seed)`."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction = {test_fraction} is not allowed; it must be between 0 and 1 (exclusive)")
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    members = list(groups.values())
    n_test = round(test_fraction * len(keys))
    if n_test < 2 or len(keys) - n_test < 2:
        raise ValueError(
            f"test_fraction = {test_fraction} of {len(keys)} rows leaves {n_test} test and {len(keys) - n_test} "
            "training rows; each side needs at least 2"
        )
    test: list[int] = []
    for g in np.random.default_rng(seed).permutation(len(members)):
        if len(test) >= n_test:
            break
        test += members[g]
    test_rows = np.array(sorted(test))
    train_rows = np.setdiff1d(np.arange(len(keys)), test_rows)
    return train_rows, test_rows


def group_folds(keys: Sequence[str], n_folds: int, seed: int) -> list[np.ndarray]:
    """Indices of `n_folds` validation folds (grouped by key, shuffled)."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    members = list(groups.values())
    if n_folds < 2 or n_folds > len(members):
        raise ValueError(
            f"cv_folds = {n_folds} is not allowed with {len(members)} distinct configs; use 2..{len(members)}"
        )
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for j, g in enumerate(np.random.default_rng(seed).permutation(len(members))):
        folds[j % n_folds] += members[g]
    return [np.array(sorted(f)) for f in folds]


class _Features:
    """Feature matrices per feature family, computed once for all rows and sliced per fold."""

    def __init__(self, arrays: ArchArrays, space: MBV3Space, lut: Mapping[str, float] | None) -> None:
        self.arrays, self.space, self.lut = arrays, space, lut
        self._cache: dict[str, np.ndarray] = {}

    def matrix(self, candidate: Candidate) -> np.ndarray:
        model = build_model(candidate.kind, candidate.config, lut=self.lut)
        key = candidate.kind if candidate.kind == "lut" else model.config()["feature_set"]
        if key not in self._cache:
            self._cache[key] = model.features(self.arrays, self.space)
        return self._cache[key]


def _fit_score(
    candidate: Candidate,
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    lut,
    seed: int,
    bound: bool = False,
) -> dict[str, float]:
    from predictors.predictor import forward_transform, inverse_transform, soft_bound

    model = build_model(candidate.kind, candidate.config, lut=lut)
    model.fit(X[train], forward_transform(y[train], candidate.transform), seed)
    pred = inverse_transform(model.predict(X[val]), candidate.transform)
    if bound:
        pred = soft_bound(pred, y[train].min(), y[train].max())
    return regression_metrics(y[val], pred)


def _choose(scores: list[CVScore]) -> CVScore:
    """Highest mean CV Kendall tau (ranking is what the search uses); MAPE breaks ties."""

    def key(s: CVScore) -> tuple[float, float]:
        tau = s.mean("kendall_tau")
        mape = s.mean("mape")
        return (round(tau, 4) if np.isfinite(tau) else -2.0, -(mape if np.isfinite(mape) else np.inf))

    return max(scores, key=key)


def fit_predictor(
    table: str | Path,
    target: str,
    out: str | Path,
    space: MBV3Space | str = "mnist",
    split_seed: int = 0,
    test_fraction: float = 0.2,
    test_table: str | Path | None = None,
    model: str | Sequence[str] = "auto",
    lut: str | Path | None = None,
    transform: str = "auto",
    cv_folds: int = 5,
    seed: int = 0,
    bound: bool = False,
    model_configs: Mapping[str, Mapping[str, Any]] | None = None,
    grid: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    plot: bool = True,
    console: Console | None = None,
) -> FitResult:
    """Fit, choose, score and save a predictor of column `target` of `table` into `out`.
    `bound`: predictions (CV, held-out and later) are softly bounded to the training targets' range."""
    console = console or make_console()
    space = get_space(space) if isinstance(space, str) else space
    kinds = parse_models(model)
    lut_table = read_lut(lut) if lut else None
    data = read_table(table, target, space)
    if test_table:
        held = read_table(test_table, target, space)
        train_arrays, y_train, test_arrays, y_test = data.arrays, data.y, held.arrays, held.y
        train_keys = [a.key() for a in data.archs]
        split = {"test_table": str(held.path), "test_table_sha256": held.sha256}
    else:
        keys = [a.key() for a in data.archs]
        train_rows, test_rows = group_split(keys, test_fraction, split_seed)
        train_arrays, y_train = data.take(train_rows)
        test_arrays, y_test = data.take(test_rows)
        train_keys = [keys[i] for i in train_rows]
        split = {"split_seed": split_seed, "test_fraction": test_fraction}
    candidates = make_candidates(kinds, data.y, transform, model_configs or {}, lut_table is not None, grid)
    console.print(
        f"[bold]{target}[/] of {data.path} ({len(data)} rows, space {space.name}): "
        f"{len(y_train)} training, {len(y_test)} held-out rows; candidates: {', '.join(c.name for c in candidates)}"
    )

    feats = _Features(train_arrays, space, lut_table)
    scores: list[CVScore] = []
    if len(candidates) > 1:
        folds = group_folds(train_keys, cv_folds, seed)
        all_rows = np.arange(len(y_train))
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("cross-validating candidates", total=len(candidates) * len(folds))
            for cand in candidates:
                X = feats.matrix(cand)
                desc = build_model(cand.kind, cand.config, lut=lut_table).describe()
                score = CVScore(cand, desc + (", log target" if cand.transform == "log" else ""))
                start = time.perf_counter()
                for val in folds:
                    train = np.setdiff1d(all_rows, val)
                    score.folds.append(_fit_score(cand, X, y_train, train, val, lut_table, seed, bound))
                    progress.advance(task)
                score.seconds = time.perf_counter() - start
                scores.append(score)
        chosen = _choose(scores).candidate
    else:
        chosen = candidates[0]

    with console.status(f"fitting {chosen.name} on all {len(y_train)} training rows"):
        start = time.perf_counter()
        predictor = Predictor(space, target, build_model(chosen.kind, chosen.config, lut=lut_table), chosen.transform)
        predictor.fit_arrays(train_arrays, y_train, seed, bound_to_targets=bound)
        fit_seconds = time.perf_counter() - start
    held_out = regression_metrics(y_test, predictor.predict_arrays(test_arrays))
    baseline = Predictor(space, target, build_model(BASELINE["kind"], BASELINE["config"]), BASELINE["transform"])
    baseline_metrics = regression_metrics(
        y_test, baseline.fit_arrays(train_arrays, y_train).predict_arrays(test_arrays)
    )

    out = Path(out)
    metrics: dict[str, Any] = {
        **held_out,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "target": target,
        "model": chosen.name,
        "model_description": predictor.describe(),
        "mape_unit": "percent",
        "baseline_onehot_ridge": baseline_metrics,
        "cv": [s.to_dict() for s in scores],
        "cv_folds": cv_folds if scores else 0,
        "fit_seconds": round(fit_seconds, 3),
        "table": str(data.path),
        "table_sha256": data.sha256,
        **split,
        "space": space.name,
        "space_fingerprint": space.fingerprint(),
        "feature_version": FEATURE_VERSION,
    }
    predictor.metrics = {k: metrics[k] for k in (*METRIC_KEYS, "n_train", "n_test")}
    predictor.info = {
        "training_data": {"table": str(data.path), "sha256": data.sha256, **split, "n_train": int(len(y_train))},
        "lut": str(lut) if lut else None,
        "cv": metrics["cv"],
        "chosen_by": "highest mean cross-validated Kendall tau" if scores else "only candidate",
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "versions": _versions(),
    }
    paths = {"predictor": predictor.save(out), "metrics": atomic_write_json(out / "metrics.json", json_safe(metrics))}
    if plot:
        paths["calibration"] = calibration_plot(
            y_test,
            predictor.predict_arrays(test_arrays),
            out / "calibration.png",
            f"{target}: {predictor.describe()} ({space.name})",
            label=target,
        )
    _report(console, scores, chosen, held_out, baseline_metrics, metrics)
    for name, p in paths.items():
        console.print(f"written: {p}" + ("" if name != "predictor" else escape(f" ({predictor.describe()})")))
    return FitResult(predictor, metrics, scores, paths)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "xgboost-cpu", "xgboost", "safetensors", "ofa-hwnas"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _report(
    console: Console,
    scores: list[CVScore],
    chosen: Candidate,
    held_out: Mapping[str, float],
    baseline: Mapping[str, float],
    metrics: Mapping[str, Any],
) -> None:
    if scores:
        cv = RichTable(title=f"{len(scores[0].folds)}-fold cross-validation on the training rows")
        for col in ("candidate", "model", "tau", "tau sd", "MAPE %", "within 10%", "seconds"):
            cv.add_column(col, justify="left" if col in ("candidate", "model") else "right")
        for s in scores:
            mark = " *" if s.candidate == chosen else ""
            cv.add_row(
                s.candidate.name + mark,
                escape(s.description),
                f"{s.mean('kendall_tau'):.4f}",
                f"{s.std('kendall_tau'):.4f}",
                f"{s.mean('mape'):.2f}",
                f"{s.mean('within_10pct'):.3f}",
                f"{s.seconds:.1f}",
            )
        console.print(cv)
    held = RichTable(title=f"held-out rows (n_train {metrics['n_train']}, n_test {metrics['n_test']})")
    for col in ("predictor", "tau", "spearman", "RMSE", "MAPE %", "within 5%", "within 10%"):
        held.add_column(col, justify="left" if col == "predictor" else "right")
    for name, m in ((f"{chosen.name} (chosen)", held_out), ("one-hot ridge (baseline)", baseline)):
        held.add_row(
            name,
            f"{m['kendall_tau']:.4f}",
            f"{m['spearman']:.4f}",
            f"{m['rmse']:.4g}",
            f"{m['mape']:.2f}",
            f"{m['within_5pct']:.3f}",
            f"{m['within_10pct']:.3f}",
        )
    console.print(held)


def fit_from_config(cfg: DictConfig, out: str | Path | None = None, console: Console | None = None) -> FitResult:
    """Run `fit_predictor` from the `conf/fit.yaml` config (`out` when the config has none)."""
    for key in ("table", "target"):
        if cfg.get(key) in (None, ""):
            raise ValueError(f"{key} is required: ofa-fit table=<csv> target=<column> [out=<dir>]")
    out = cfg.get("out") or out
    if not out:
        raise ValueError("out is required: ofa-fit table=<csv> target=<column> out=<dir>")
    models = OmegaConf.to_container(cfg.models, resolve=True) if cfg.get("models") else {}
    grid = OmegaConf.to_container(cfg.grid, resolve=True) if cfg.get("grid") else {}
    return fit_predictor(
        table=cfg.table,
        target=str(cfg.target),
        out=out,
        space=str(cfg.space),
        split_seed=int(cfg.split_seed),
        test_fraction=float(cfg.test_fraction),
        test_table=cfg.get("test_table"),
        model=cfg.model,
        lut=cfg.get("lut"),
        transform=str(cfg.transform),
        cv_folds=int(cfg.cv_folds),
        seed=int(cfg.seed),
        bound=bool(cfg.get("bound", False)),
        model_configs=models,
        grid=grid,
        console=console,
    )


@hydra_command("fit")
def main(cfg: DictConfig) -> None:
    fit_from_config(cfg, out=HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
