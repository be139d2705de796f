"""Measurements of sub-networks on devices and the predictors fitted from them.

The search uses `load_predictor(path, space) -> Predictor`; `Predictor.predict(archs)` returns
one float64 value per config, `Predictor.target` names what it predicts and
`Predictor.metrics` holds its held-out quality. `predictors.fit.fit_predictor` makes them
(the `ofa-fit` command, app/fit.py). The package prints nothing and leaves process state as it
found it: progress goes through `on_progress(done, total)` callbacks.
"""

from predictors.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
