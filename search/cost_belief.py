"""What the measurement loop believes about a cost (latency, power, energy) it has measured on
some candidates: the predicted cost of every candidate and how likely each is to meet a limit.

The model is the better (5-fold CV) of a ridge on the cost, a ridge on its log and extra-trees
on its log; its out-of-fold misses say how far off it can be, so a cell predicted over a limit
meets it as often as the model missed by that much. One law of misses serves every candidate:
reading each at a local scale (trees on the misses' sizes) is better calibrated but cost the
NAS-Bench-201 loop regret (`bench/README.md#loop_ceilingpy`, stop 33).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class CostBelief:
    """One cost metric's belief on a transformed scale: the predicted cost of every candidate
    and what the model misses by. `residuals` (sorted truth - prediction, out of fold): the
    misses themselves, so a cell predicted over a limit meets it as often as the model missed
    by that much. A normal law with the robust spread of those misses hides their tails (phones
    run some cells of one kind a quarter faster than the rest, `bench/README.md#loop_ceilingpy`).
    None: a normal law with `spread` (too few measurements, or true costs)."""

    predicted: np.ndarray
    spread: float
    transform: Callable[[Any], Any]
    residuals: np.ndarray | None = None

    def p_meets(self, limit: float) -> np.ndarray:
        """Per candidate, the chance that its cost is at most `limit`."""
        room = self.transform(limit) - self.predicted
        if self.residuals is None:
            return norm.cdf(room / self.spread)
        # The misses' empirical law, kept off 0 and 1 (a miss larger than any seen can happen).
        return (np.searchsorted(self.residuals, room, side="right") + 0.5) / (len(self.residuals) + 1)


def known_cost(values: np.ndarray) -> CostBelief:
    """The true costs on `fit_cost`'s scale with a token spread: the budget's test is exact."""
    transform = log_scale(values)
    return CostBelief(transform(values), 1e-6, transform)


def log_scale(values: np.ndarray) -> Callable[[Any], Any]:
    """log(v + c), c a tenth of the median: near-zero costs (pruned cells) stay finite."""
    offset = 0.1 * float(np.median(values)) + 1e-12

    def transform(v: Any) -> Any:
        return np.log(np.asarray(v, dtype=float) + offset)

    return transform


def fit_cost(features: np.ndarray, rows: np.ndarray, values: np.ndarray, seed: int) -> CostBelief:
    """Predicted cost of every candidate (rows of `features`; `rows` the measured ones, with
    `values`) on a log(v + c) scale by the model with the smallest robust spread of 5-fold CV
    misses, with those misses."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    transform = log_scale(values)
    target = transform(values)
    # (model, fitted on the cost itself rather than its log): latency is close to a sum of
    # per-op costs, which a linear model on the cost itself fits best (NAS-Bench-201 phones:
    # median error 10 % against 25 % on the log); trees capture what does not add up.
    makers = {
        "ridge": (lambda: Ridge(alpha=1.0), True),
        "ridge-log": (lambda: Ridge(alpha=1.0), False),
        "trees": (lambda: ExtraTreesRegressor(n_estimators=48, max_features=0.5, random_state=seed), False),
    }

    def fit_predict(name: str, train: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
        """Fit on measurements `train` (positions), predict candidates `test_rows` (transformed)."""
        make, linear = makers[name]
        x = features[rows[train]]
        if not linear:
            return make().fit(x, target[train]).predict(features[test_rows])
        predicted = make().fit(x, values[train]).predict(features[test_rows])
        return transform(np.maximum(predicted, 0.0))

    best: tuple[float, str, np.ndarray | None] | None = None
    folds = min(5, len(rows))
    for name in makers:
        misses = None
        if folds < 2:
            spread = 0.1
        else:
            cv = np.empty(len(rows))
            for train, test in KFold(folds, shuffle=True, random_state=seed).split(rows):
                cv[test] = fit_predict(name, train, rows[test])
            misses = np.sort(target - cv)
            spread = float(1.4826 * np.median(np.abs(misses - np.median(misses))))
        if best is None or spread < best[0]:
            best = (spread, name, misses)
    assert best is not None
    predicted = fit_predict(best[1], np.arange(len(rows)), np.arange(len(features)))
    return CostBelief(predicted, max(best[0], 0.01), transform, best[2])
