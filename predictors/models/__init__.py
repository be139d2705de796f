"""Regression models behind a predictor: lookup table, ridge, gradient-boosted trees, MLP.

Each model builds its own features from a batch of configs (`features`), fits on a feature
matrix and a (possibly log-transformed) target, and serialises to a JSON-able dict plus a
dict of numpy arrays (stored as safetensors): never pickle.

Measurements have heavy tails (contention on a shared device inflates some figures 1.5-4x),
so every model fits with a robust loss: Huber weights (IRLS) for ridge and the lookup table's
scale and offset, pseudo-Huber for the trees, Huber for the MLP. The Huber threshold comes
from the residual scale (MAD) of a linear pilot fit, so it adapts to the target's units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from predictors.models.base import HUBER_C, Model, Standardizer, huber_ridge, robust_scale
from predictors.models.gbt import GBTModel, GBTParams
from predictors.models.linear import LUTModel, RidgeModel
from predictors.models.mlp import MLPModel

__all__ = [
    "HUBER_C",
    "MODELS",
    "GBTModel",
    "GBTParams",
    "LUTModel",
    "MLPModel",
    "Model",
    "RidgeModel",
    "Standardizer",
    "build_model",
    "huber_ridge",
    "robust_scale",
]

MODELS: dict[str, type[Model]] = {m.kind: m for m in (LUTModel, RidgeModel, GBTModel, MLPModel)}


def build_model(kind: str, config: Mapping[str, Any], lut: Mapping[str, float] | None = None) -> Model:
    """An unfitted model of `kind` from its `config()`."""
    if kind not in MODELS:
        raise ValueError(f"model = {kind!r} is not allowed; allowed: {', '.join(MODELS)}")
    if kind == "lut":
        if lut is None:
            raise ValueError("model = 'lut' needs a lookup table: pass lut=<lut.csv>")
        return LUTModel(lut, **config)
    return MODELS[kind].from_config(config)
