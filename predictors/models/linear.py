"""Additive models: OFA's per-layer lookup table and ridge regression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ofa.space import MBV3Space
from predictors.features import FEATURE_SETS, ArchArrays, _index, block_lookup, cost_tables, encode
from predictors.models.base import HUBER_C, Model, Standardizer, huber_ridge, robust_scale


class LUTModel(Model):
    """OFA-style additive lookup table: a sub-network's latency is the sum of its layers'
    latencies (keyed by `LayerCost.shape`), then a per-device scale and offset fitted on
    end-to-end measurements absorb what the per-layer figures miss (launch gaps, caches)."""

    kind = "lut"

    def __init__(self, lut: Mapping[str, float], robust: bool = True) -> None:
        if not lut:
            raise ValueError("the lookup table is empty")
        self.lut = {str(k): float(v) for k, v in lut.items()}
        self.robust = robust
        self.scale, self.offset = 1.0, 0.0

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        t = cost_tables(space)
        values = np.array([self.lut.get(s, np.nan) for s in t.shapes])
        block_ids = block_lookup(arrays, space, t.shape_id + 1) - 1  # -1 at skipped slots
        fixed_ids = t.fixed_shape_id[_index(arrays.r, space.resolutions)]
        blocks = np.where(block_ids >= 0, values[block_ids], 0.0)
        fixed = values[fixed_ids]
        missing = np.isnan(blocks).any(axis=1) | np.isnan(fixed).any(axis=1)
        if missing.any():
            i = int(np.argmax(missing))
            used = np.concatenate([block_ids[i][block_ids[i] >= 0], fixed_ids[i]])
            lacking = sorted({t.shapes[j] for j in used if np.isnan(values[j])})
            raise ValueError(
                f"the lookup table has no latency for layer shape {lacking[0]!r} "
                f"({int(missing.sum())} of {len(missing)} configs use shapes it lacks)"
            )
        return (blocks.sum(axis=1) + fixed.sum(axis=1))[:, None]

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> LUTModel:
        s = X[:, 0]
        A = np.column_stack([s, np.ones(len(s))])
        w = np.linalg.lstsq(A, y, rcond=None)[0]
        if self.robust:
            for _ in range(50):
                residuals = y - A @ w
                u = np.abs(residuals) / (HUBER_C * robust_scale(residuals))
                weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
                w = np.linalg.lstsq(A * np.sqrt(weights)[:, None], y * np.sqrt(weights), rcond=None)[0]
        self.scale, self.offset = float(w[0]), float(w[1])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scale * X[:, 0] + self.offset

    def config(self) -> dict[str, Any]:
        return {"robust": self.robust}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"scale": self.scale, "offset": self.offset, "lut_ms": self.lut}, {}

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LUTModel:
        self.lut = {str(k): float(v) for k, v in meta["lut_ms"].items()}
        self.scale, self.offset = float(meta["scale"]), float(meta["offset"])
        return self


class RidgeModel(Model):
    """Ridge regression on standardised features; Huber loss by IRLS when `robust`."""

    kind = "ridge"

    def __init__(self, feature_set: str = "all", alpha: float = 1.0, robust: bool = True) -> None:
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set = {feature_set!r} is not allowed; allowed: {', '.join(FEATURE_SETS)}")
        self.feature_set, self.alpha, self.robust = feature_set, float(alpha), bool(robust)
        self.scaler: Standardizer | None = None
        self.coef = np.zeros(0)
        self.intercept = 0.0

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        return encode(arrays, space, self.feature_set)

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> RidgeModel:
        self.scaler = Standardizer.fit(X)
        self.coef, self.intercept = huber_ridge(self.scaler(X), y, self.alpha, self.robust)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scaler(X) @ self.coef + self.intercept

    def config(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "alpha": self.alpha, "robust": self.robust}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"x_mean": self.scaler.mean, "x_std": self.scaler.std, "coef": self.coef}
        return {"intercept": self.intercept}, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> RidgeModel:
        self.scaler = Standardizer(arrays["x_mean"], arrays["x_std"])
        self.coef, self.intercept = np.asarray(arrays["coef"], np.float64), float(meta["intercept"])
        return self

    def describe(self) -> str:
        return f"ridge[{self.feature_set}{', huber' if self.robust else ''}]"
