"""Measurements of sub-networks on devices and the predictors fitted from them.

The search uses `load_predictor(path, space) -> Predictor`; `Predictor.predict(archs)` returns
one float64 value per config, `Predictor.target` names what it predicts and
`Predictor.metrics` holds its held-out quality. `ofa-fit` (predictors.fit) makes them.
"""

from predictors.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
