"""Fit a predictor from a measurement table: candidates scored by cross-validation on the
training rows, the best refitted and scored on held-out rows, saved with its metrics and a
calibration plot. `ofa-fit` (app/fit.py, config `conf/fit.yaml`) is a thin shell over `fit_predictor`.

The split is grouped by sub-network, so repeated measurements of one config never sit on
both sides: groups (configs, in order of first appearance) are shuffled by
`numpy.random.default_rng(split_seed)` and the first `round(test_fraction * n)` rows' worth
go to the test side. With one row per config that is `permutation(n)[:n_test]`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa.io import atomic_write_json
from ofa.space import MBV3Space
from predictors.candidates import (
    MODEL_CHOICES,
    Candidate,
    CVScore,
    Features,
    choose,
    cross_validate,
    make_candidates,
    parse_models,
)
from predictors.features import FEATURE_VERSION, ArchArrays
from predictors.metrics import METRIC_KEYS, calibration_plot, regression_metrics
from predictors.models import build_model
from predictors.predictor import Predictor, json_safe
from predictors.table import Table, read_lut, read_table

__all__ = ["MODEL_CHOICES", "FitResult", "FitSettings", "fit_predictor", "group_folds", "group_split"]

BASELINE = {"kind": "ridge", "config": {"feature_set": "onehot", "alpha": 1.0, "robust": False}, "transform": "none"}


@dataclass(frozen=True)
class FitSettings:
    """How `fit_predictor` splits, chooses and fits (conf/fit.yaml holds the same fields)."""

    split_seed: int = 0  # held-out rows: default_rng(split_seed) over configs
    test_fraction: float = 0.2
    test_table: str | os.PathLike | None = None  # score on this table instead (train on all of `table`)
    model: str | Sequence[str] = "auto"  # auto, a kind, or several (comma-separated or a list)
    lut: str | os.PathLike | None = None  # lut.csv for the lookup-table model
    transform: str = "auto"  # auto | log | none
    cv_folds: int = 5
    seed: int = 0  # model seeds and CV folds
    bound: bool = False  # predictions softly bounded to the training targets' range
    model_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # kind -> hyper-parameters
    grid: Mapping[str, Mapping[str, Sequence[Any]]] = field(default_factory=dict)  # kind -> values CV also tries
    plot: bool = True  # calibration.png


@dataclass
class FitResult:
    predictor: Predictor
    metrics: dict[str, Any]  # what metrics.json holds
    cv: list[CVScore]  # empty with a single candidate
    paths: dict[str, Path]  # predictor, metrics, calibration
    chosen: Candidate
    candidates: list[Candidate]
    n_rows: int  # rows of `table`


@dataclass(frozen=True)
class _Split:
    train: ArchArrays
    y_train: np.ndarray
    test: ArchArrays
    y_test: np.ndarray
    train_keys: list[str]
    info: dict[str, Any]  # how the held-out rows were chosen (recorded in metrics.json)


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


def _split(data: Table, settings: FitSettings) -> _Split:
    if settings.test_table:
        held = read_table(settings.test_table, data.target, data.space)
        info = {"test_table": str(held.path), "test_table_sha256": held.sha256}
        return _Split(data.arrays, data.y, held.arrays, held.y, [a.key() for a in data.archs], info)
    keys = [a.key() for a in data.archs]
    train_rows, test_rows = group_split(keys, settings.test_fraction, settings.split_seed)
    info = {"split_seed": settings.split_seed, "test_fraction": settings.test_fraction}
    return _Split(*data.take(train_rows), *data.take(test_rows), [keys[i] for i in train_rows], info)


def fit_predictor(
    table: str | os.PathLike,
    target: str,
    out: str | os.PathLike,
    settings: FitSettings | None = None,
    space: MBV3Space | str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit, choose, score and save a predictor of column `target` of `table` into `out`.
    `space`: a space or its name; None takes the space the table's fingerprints name (a table
    without them is refused in one line asking for `space=<name>`). `on_progress(done, total)`
    counts the cross-validation fits and the final fit."""
    settings = settings or FitSettings()
    kinds = parse_models(settings.model)
    lut = read_lut(settings.lut) if settings.lut else None
    data = read_table(table, target, space)
    split = _split(data, settings)
    candidates = make_candidates(kinds, data.y, settings.transform, settings.model_configs, lut is not None,
                                 settings.grid)  # fmt: skip
    folds = group_folds(split.train_keys, settings.cv_folds, settings.seed) if len(candidates) > 1 else []
    total, done = len(candidates) * len(folds) + 1, 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    if on_progress is not None:
        on_progress(0, total)
    features = Features(split.train, data.space, lut)
    scores = cross_validate(candidates, features, split.y_train, folds, settings.seed, settings.bound, step)
    chosen = choose(scores).candidate if scores else candidates[0]
    start = time.perf_counter()
    predictor = Predictor(data.space, target, build_model(chosen.kind, chosen.config, lut=lut), chosen.transform)
    predictor.fit_arrays(split.train, split.y_train, settings.seed, bound_to_targets=settings.bound)
    fit_seconds = time.perf_counter() - start
    step()
    metrics = _metrics(data, split, predictor, chosen, scores, settings)
    metrics["fit_seconds"] = round(fit_seconds, 3)
    predictor.metrics = {k: metrics[k] for k in (*METRIC_KEYS, "n_train", "n_test")}
    predictor.info = _info(data, split, settings, metrics, scores)
    paths = _save(Path(out), predictor, metrics, split, settings.plot)
    return FitResult(predictor, metrics, scores, paths, chosen, list(candidates), len(data))


def _metrics(
    data: Table, split: _Split, predictor: Predictor, chosen: Candidate, scores: list[CVScore], settings: FitSettings
) -> dict[str, Any]:
    """metrics.json: the held-out scores of the chosen predictor and of the one-hot ridge baseline."""
    held_out = regression_metrics(split.y_test, predictor.predict_arrays(split.test))
    spec = BASELINE
    baseline = Predictor(data.space, data.target, build_model(spec["kind"], spec["config"]), spec["transform"])
    baseline_metrics = regression_metrics(
        split.y_test, baseline.fit_arrays(split.train, split.y_train).predict_arrays(split.test)
    )
    return {
        **held_out,
        "n_train": int(len(split.y_train)),
        "n_test": int(len(split.y_test)),
        "target": data.target,
        "model": chosen.name,
        "model_description": predictor.describe(),
        "mape_unit": "percent",
        "baseline_onehot_ridge": baseline_metrics,
        "cv": [s.to_dict() for s in scores],
        "cv_folds": settings.cv_folds if scores else 0,
        "fit_seconds": None,
        "table": str(data.path),
        "table_sha256": data.sha256,
        **split.info,
        "space": data.space.name,
        "space_fingerprint": data.space.fingerprint(),
        "feature_version": FEATURE_VERSION,
    }


def _info(
    data: Table, split: _Split, settings: FitSettings, metrics: Mapping[str, Any], scores: list[CVScore]
) -> dict[str, Any]:
    """What the predictor records of how it was made."""
    return {
        "training_data": {
            "table": str(data.path),
            "sha256": data.sha256,
            **split.info,
            "n_train": int(len(split.y_train)),
        },  # fmt: skip
        "lut": str(settings.lut) if settings.lut else None,
        "cv": metrics["cv"],
        "chosen_by": "highest mean cross-validated Kendall tau" if scores else "only candidate",
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "versions": _versions(),
    }


def _save(out: Path, predictor: Predictor, metrics: Mapping[str, Any], split: _Split, plot: bool) -> dict[str, Path]:
    paths = {"predictor": predictor.save(out), "metrics": atomic_write_json(out / "metrics.json", json_safe(metrics))}
    if plot:
        paths["calibration"] = calibration_plot(
            split.y_test,
            predictor.predict_arrays(split.test),
            out / "calibration.png",
            f"{predictor.target}: {predictor.describe()} ({predictor.space.name})",
            label=predictor.target,
        )
    return paths


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "xgboost-cpu", "xgboost", "safetensors", "ofa-hwnas"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out
