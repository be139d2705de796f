"""The candidates `ofa-fit` chooses between, and their cross-validation on the training rows:
each model kind with its hyper-parameters (once per grid combination) and target transform,
scored per fold; the highest mean Kendall tau wins (ranking is what the search uses)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa.space import MBV3Space
from predictors.features import ArchArrays
from predictors.metrics import regression_metrics
from predictors.models import MODELS, build_model
from predictors.predictor import TRANSFORMS, forward_transform, inverse_transform, soft_bound

MODEL_CHOICES = ("auto", *MODELS)


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


class Features:
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


def fit_score(
    candidate: Candidate,
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    lut: Mapping[str, float] | None,
    seed: int,
    bound: bool = False,
) -> dict[str, float]:
    """Fit `candidate` on rows `train` of (X, y) and score it on rows `val`."""
    model = build_model(candidate.kind, candidate.config, lut=lut)
    model.fit(X[train], forward_transform(y[train], candidate.transform), seed)
    pred = inverse_transform(model.predict(X[val]), candidate.transform)
    if bound:
        pred = soft_bound(pred, y[train].min(), y[train].max())
    return regression_metrics(y[val], pred)


def choose(scores: list[CVScore]) -> CVScore:
    """Highest mean CV Kendall tau (ranking is what the search uses); MAPE breaks ties."""

    def key(s: CVScore) -> tuple[float, float]:
        tau = s.mean("kendall_tau")
        mape = s.mean("mape")
        return (round(tau, 4) if np.isfinite(tau) else -2.0, -(mape if np.isfinite(mape) else np.inf))

    return max(scores, key=key)


def cross_validate(
    candidates: Sequence[Candidate],
    features: Features,
    y: np.ndarray,
    folds: Sequence[np.ndarray],
    seed: int,
    bound: bool,
    step: Callable[[], None] | None = None,
) -> list[CVScore]:
    """Every candidate scored on every fold (trained on the other folds); `step()` after each fit."""
    all_rows = np.arange(len(y))
    scores = []
    for cand in candidates:
        X = features.matrix(cand)
        desc = build_model(cand.kind, cand.config, lut=features.lut).describe()
        score = CVScore(cand, desc + (", log target" if cand.transform == "log" else ""))
        start = time.perf_counter()
        for val in folds:
            train = np.setdiff1d(all_rows, val)
            score.folds.append(fit_score(cand, X, y, train, val, features.lut, seed, bound))
            if step is not None:
                step()
        score.seconds = time.perf_counter() - start
        scores.append(score)
    return scores
