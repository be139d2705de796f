"""`ofa-fit ... sources=[...]`: a predictor for a device from its few measurements plus devices
already profiled (predictors.transfer), saved as an ordinary predictor.

The transferred model needs the sources' predictions, which an ordinary predictor cannot carry;
so it is distilled: the sources' predictors and the transfer model label a pool of sub-networks
(seeded, spread over the MACs range, plus the measured ones), and a ridge or tree model on the
architecture features learns those labels (the one that agrees best with them on a fifth of the
pool held out; the agreement is recorded). The result loads with `load_predictor` and serves
`ofa-search` like any other, and its predictor.json names the sources (name, file, sha256,
space fingerprint). Scored on `test_table` when given (e.g. the full profile), else by
leave-one-out on the measured rows.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ofa.io import atomic_write_json
from ofa.paths import HW_PROFILES_DIR
from ofa.space import ArchConfig, MBV3Space
from predictors.features import FEATURE_VERSION, to_arrays
from predictors.metrics import METRIC_KEYS, calibration_plot, regression_metrics
from predictors.models import build_model
from predictors.predictor import Predictor, json_safe
from predictors.sampling import pool_archs
from predictors.table import Table, read_table
from predictors.transfer import TransferModel, compact_features, fit_transfer
from predictors.transfer_sources import Source, resolve_sources, source_latencies

__all__ = ["TransferFitResult", "TransferFitSettings", "fit_transferred"]

# Distillation candidates: (kind, config, transform). Linear sources make the transfer model
# linear in the analytic features, which the ridge reproduces; trees follow the rest.
STUDENTS = (
    ("ridge", {"feature_set": "all", "alpha": 0.01, "robust": False}, "none"),
    ("ridge", {"feature_set": "all", "alpha": 0.01, "robust": False}, "log"),
    ("gbt", {"feature_set": "all"}, "log"),
)
BASELINE = ("ridge", {"feature_set": "onehot", "alpha": 1.0, "robust": False}, "none")  # predictors.fit's


@dataclass(frozen=True)
class TransferFitSettings:
    sources: Sequence[str]  # device names (hw_profiles/<name>) or measurement tables
    profiles_dir: str | os.PathLike = HW_PROFILES_DIR
    seed: int = 0  # the distillation pool, the sources fitted from tables, the students
    pool: int = 4000  # sub-networks the transferred model is distilled on
    test_table: str | os.PathLike | None = None  # score on this table (e.g. the device's full profile)
    plot: bool = True


@dataclass
class TransferFitResult:
    predictor: Predictor
    transfer: TransferModel
    sources: list[Source]
    metrics: dict[str, Any]  # what metrics.json holds
    paths: dict[str, Path] = field(default_factory=dict)
    n_rows: int = 0


def _student(model: TransferModel, sources: list[Source], space: MBV3Space, pool: list[ArchConfig], seed: int):
    """The ordinary predictor that agrees best with the transferred model on a held-out fifth of
    the pool, and that agreement."""
    arrays = to_arrays(pool, space)
    labels = model.predict(source_latencies(sources, pool) if sources else None, compact_features(arrays, space))
    check = np.random.default_rng(seed).permutation(len(pool))[: max(len(pool) // 5, 2)]
    train = np.setdiff1d(np.arange(len(pool)), check)
    best = None
    for kind, config, transform in STUDENTS:
        student = Predictor(space, "", build_model(kind, config), transform)
        student.fit_arrays(arrays.take(train), labels[train], seed)
        agreement = regression_metrics(labels[check], student.predict_arrays(arrays.take(check)))
        if best is None or agreement["kendall_tau"] > best[1]["kendall_tau"]:
            best = (student, agreement)
    return best


def _score(predictor: Predictor, data: Table, model: TransferModel, settings: TransferFitSettings) -> dict:
    """Held-out metrics: on `test_table` (with the one-hot ridge baseline and the one-device
    fallback fitted on the same rows), else leave-one-out on the measured rows."""
    if settings.test_table is None:
        loo = regression_metrics(data.y, model.loo)
        return {**loo, "n_test": len(data), "evaluated_on": "leave-one-out on the measured rows"}
    held = read_table(settings.test_table, data.target, data.space)
    out = regression_metrics(held.y, predictor.predict_arrays(held.arrays))
    kind, config, transform = BASELINE
    baseline = Predictor(data.space, data.target, build_model(kind, config), transform)
    baseline.fit_arrays(data.arrays, data.y)
    alone = fit_transfer(data.y, None, compact_features(data.arrays, data.space))
    return {
        **out,
        "n_test": len(held),
        "evaluated_on": f"test table {held.path}",
        "test_table": str(held.path),
        "test_table_sha256": held.sha256,
        "baseline_onehot_ridge": regression_metrics(held.y, baseline.predict_arrays(held.arrays)),
        "without_sources": regression_metrics(held.y, alone.predict(None, compact_features(held.arrays, data.space))),
    }


def fit_transferred(
    table: str | os.PathLike,
    target: str,
    out: str | os.PathLike,
    settings: TransferFitSettings,
    space: MBV3Space | str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TransferFitResult:
    """Fit the transferred predictor of column `target` of `table` (the new device's few rows)
    from `settings.sources`, distil, score and save it into `out`. `on_progress(done, total)`:
    sources resolved, transfer fitted, distilled."""
    step = on_progress or (lambda done, total: None)
    step(0, 3)
    data = read_table(table, target, space)
    sources = resolve_sources(settings.sources, data.space, target, settings.profiles_dir, settings.seed)
    step(1, 3)
    S = source_latencies(sources, data.archs) if sources else None
    model = fit_transfer(data.y, S, compact_features(data.arrays, data.space))
    step(2, 3)
    pool = pool_archs(data.space, settings.pool, settings.seed, data.archs)
    student, agreement = _student(model, sources, data.space, pool, settings.seed)
    predictor = Predictor(data.space, target, student.model, student.transform, sources=[s.record() for s in sources])
    step(3, 3)
    metrics = {**_score(predictor, data, model, settings), "n_train": len(data)}
    metrics.update(_record(data, model, agreement, len(pool), predictor))
    predictor.metrics = {k: metrics[k] for k in (*METRIC_KEYS, "n_train", "n_test")}
    predictor.info = {
        "training_data": {"table": str(data.path), "sha256": data.sha256, "n_train": len(data)},
        "transfer": {**model.to_dict(), "distilled_into": predictor.describe(), "agreement": agreement,
                     "pool": len(pool), "pool_seed": settings.seed},
        "chosen_by": "transfer from sources; distilled into the student closest to it on held-out pool archs",
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }  # fmt: skip
    paths = _save(Path(out), predictor, metrics, data, model, settings)
    return TransferFitResult(predictor, model, sources, metrics, paths, len(data))


def _record(data: Table, model: TransferModel, agreement: dict, pool: int, predictor: Predictor) -> dict[str, Any]:
    return {
        "target": data.target,
        "model": "transfer",
        "model_description": f"{model.describe()} distilled into {predictor.describe()}",
        "mape_unit": "percent",
        "transfer_candidates": model.candidates,
        "distillation_agreement": agreement,
        "distillation_pool": pool,
        "sources": predictor.sources,
        "table": str(data.path),
        "table_sha256": data.sha256,
        "space": data.space.name,
        "space_fingerprint": data.space.fingerprint(),
        "feature_version": FEATURE_VERSION,
    }


def _save(
    out: Path, predictor: Predictor, metrics: dict, data: Table, model: TransferModel, settings: TransferFitSettings
) -> dict[str, Path]:
    paths = {"predictor": predictor.save(out), "metrics": atomic_write_json(out / "metrics.json", json_safe(metrics))}
    if settings.plot:
        if settings.test_table is None:
            y, pred, what = data.y, model.loo, "leave-one-out"
        else:
            held = read_table(settings.test_table, data.target, data.space)
            y, pred, what = held.y, predictor.predict_arrays(held.arrays), "test table"
        title = f"{data.target}: transferred from {len(predictor.sources)} sources, {len(data)} rows ({what})"
        paths["calibration"] = calibration_plot(y, pred, out / "calibration.png", title, label=data.target)
    return paths
