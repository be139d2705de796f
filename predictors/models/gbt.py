"""Gradient-boosted trees (XGBoost) on top of a robust ridge fit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ofa.space import MBV3Space
from predictors.features import ArchArrays, encode
from predictors.models.base import HUBER_C, Model, robust_scale
from predictors.models.linear import RidgeModel


@dataclass(frozen=True)
class GBTParams:
    """The trees' hyper-parameters (the JSON `config()` lists them beside `feature_set`)."""

    n_rounds: int = 600
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample: float = 0.5
    min_child_weight: float = 5.0
    n_threads: int = 1
    linear_base: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML and JSON give ints for floats and the like: store the declared type
            object.__setattr__(self, f.name, {"int": int, "float": float, "bool": bool}[f.type](getattr(self, f.name)))


class GBTModel(Model):
    """XGBoost trees (hist) with a pseudo-Huber loss. With `linear_base` the trees start from
    a robust ridge fit (XGBoost's base margin) and learn what it misses: costs are mostly
    additive, which trees alone approximate in steps. The Huber slope is the ridge residuals'
    robust scale. Saved in XGBoost's own JSON model format inside the predictor's JSON
    (portable, versioned by XGBoost, no pickle); the ridge arrays go to safetensors."""

    kind = "gbt"

    def __init__(self, feature_set: str = "all", params: GBTParams | None = None) -> None:
        self.feature_set = feature_set
        self.params = params or GBTParams()
        self.base: RidgeModel | None = None
        self.booster = None

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        return encode(arrays, space, self.feature_set)

    def _margin(self, X: np.ndarray) -> np.ndarray:
        return self.base.predict(X) if self.base is not None else np.zeros(len(X))

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> GBTModel:
        import xgboost as xgb

        pilot = RidgeModel(self.feature_set, 1.0, robust=True).fit(X, y)
        slope = HUBER_C * robust_scale(y - pilot.predict(X))
        p = self.params
        self.base = pilot if p.linear_base else None
        params = {
            "objective": "reg:pseudohubererror",
            "huber_slope": slope,
            "base_score": 0.0 if self.base is not None else float(np.median(y)),
            "tree_method": "hist",
            "max_depth": p.max_depth,
            "eta": p.learning_rate,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample,
            "min_child_weight": p.min_child_weight,
            "nthread": p.n_threads,
            "seed": int(seed),
        }
        data = xgb.DMatrix(X, label=y, base_margin=self._margin(X))
        self.booster = xgb.train(params, data, num_boost_round=p.n_rounds)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.booster.inplace_predict(X, base_margin=self._margin(X))
        return np.asarray(out, dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, **asdict(self.params)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GBTModel:
        config = dict(config)
        return cls(config.pop("feature_set", "all"), GBTParams(**config))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"xgboost_model": json.loads(bytes(self.booster.save_raw(raw_format="json")))}
        arrays: dict[str, np.ndarray] = {}
        if self.base is not None:
            base_meta, base_arrays = self.base.state()
            meta["base"] = base_meta
            arrays = {f"base.{k}": v for k, v in base_arrays.items()}
        return meta, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> GBTModel:
        import xgboost as xgb

        self.booster = xgb.Booster(params={"nthread": self.params.n_threads})
        self.booster.load_model(bytearray(json.dumps(meta["xgboost_model"]).encode()))
        self.base = None
        if self.params.linear_base:
            base_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}
            self.base = RidgeModel(self.feature_set, 1.0, True).load_state(meta["base"], base_arrays)
        return self

    def describe(self) -> str:
        base = "ridge + " if self.params.linear_base else ""
        return f"gbt[{self.feature_set}, {base}{self.params.n_rounds}x d{self.params.max_depth}]"
