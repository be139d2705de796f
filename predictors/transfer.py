"""A new device in ten measurements: a latency predictor transferred from devices already profiled.

Latency is a sum of per-operation costs on every device, and a new device's costs are nearly a
mix of the costs of devices already profiled (the sources), plus a correction per kind of work.
So the target's latency (raw milliseconds, not its log: sums stay sums) is modelled as

    y  ~  b + sum_s a_s * source_s(x) + sum_j c_j * feature_j(x)

where `source_s(x)` is source device s's predicted latency of the architecture (a fitted
predictor's, never a single noisy measurement: `smooth_columns` makes such predictions for a
table) and `feature_j` a handful of compact architecture features (operation counts; MACs,
parameters, traffic, depth and resolution). With ten measurements, each block is a ridge
regression whose strength leave-one-out chooses; the candidates (sources only, features only,
both with the features penalised 0.1-100x as much as the sources) are mixed with
pseudo-Bayesian weights from their leave-one-out errors (of log(latency + 0.2 x the median
measurement): a cell a phone prunes to ~0 ms does not dominate), tempered (Gaussian likelihood
of the held-out points raised to `tempering`: weight ~ MSE^(-tempering * n/2)); ten leave-one-out
errors are too few to trust the untempered likelihood, which puts all weight on one candidate
and picks the wrong one on devices unlike the sources. Since every candidate is linear in the
same columns the mixture is one linear model. Predictions below half the smallest measurement
are squashed, strictly monotonically, towards zero (`soft_floor`): rankings keep every
difference, latencies stay positive. Without sources it is a one-device ridge on the compact features.

Which cells to measure (`choose_measurements`): greedily the cell whose prediction a linear
model on the standardised design columns (log source latencies and compact features) knows
least (the largest predictive variance given those already chosen: a D-optimal design), from a
seeded random pool. bench/fewshot_devices.py has the figures against random cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ofa.errors import check_int
from ofa.space import MBV3Space
from predictors.features import ArchArrays, analytic_features

__all__ = [
    "COMPACT_NAMES",
    "TransferModel",
    "TransferSettings",
    "choose_measurements",
    "compact_features",
    "fit_transfer",
    "smooth_columns",
    "soft_floor",
]

COMPACT_NAMES = ("macs", "params", "traffic", "fixed_macs", "blocks", "r", "px")


def compact_features(arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
    """The few global cost terms of an MBV3 sub-network that a ten-point fit can weigh:
    `COMPACT_NAMES` (the first columns of `predictors.features.analytic_features`)."""
    return analytic_features(arrays, space)[:, : len(COMPACT_NAMES)]


def soft_floor(y: np.ndarray, floor: float) -> np.ndarray:
    """`y` above `floor` unchanged; below it `floor * exp((y - floor) / floor)`: positive,
    strictly increasing and smooth at the floor."""
    y = np.asarray(y, dtype=np.float64)
    if floor <= 0:
        return y
    return np.where(y >= floor, y, floor * np.exp(np.minimum(y - floor, 0.0) / floor))


@dataclass(frozen=True)
class TransferSettings:
    """The candidates leave-one-out weighs (every command uses the defaults; figures: bench/fewshot_devices.py)."""

    alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)  # ridge strengths, per candidate
    feature_penalties: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # features' penalty / the sources'
    tempering: float = 0.2  # power of the leave-one-out likelihood in the mixture's weights (1: untempered)
    # leave-one-out errors are of log(latency + this x the median measurement): relative for
    # ordinary cells, while a cell a mobile runtime prunes to ~0 ms cannot dominate the weights
    log_offset: float = 0.2
    floor_fraction: float = 0.5  # soft floor at this fraction of the smallest measurement


@dataclass(frozen=True)
class _Candidate:
    name: str
    columns: np.ndarray  # which of the standardised columns it uses
    penalty: np.ndarray  # per used column, relative to alpha


@dataclass
class TransferModel:
    """The fitted mixture: `predict(sources, features)` for any rows (same columns as fitted)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    floor: float
    n_sources: int
    n_train: int
    candidates: list[dict[str, Any]] = field(default_factory=list)  # name, alpha, LOO MSE, weight
    loo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the mixture's LOO predictions

    def predict(self, sources: np.ndarray | None = None, features: np.ndarray | None = None) -> np.ndarray:
        X = _design(sources, features)
        if X.shape[1] != len(self.coef):
            raise ValueError(f"the model was fitted on {len(self.coef)} columns; got {X.shape[1]}")
        return soft_floor(((X - self.mean) / self.scale) @ self.coef + self.intercept, self.floor)

    def describe(self) -> str:
        top = max(self.candidates, key=lambda c: c["weight"])
        return (
            f"transfer[{self.n_sources} sources + {len(self.coef) - self.n_sources} features, "
            f"{len(self.candidates)} candidates, top {top['name']} (weight {top['weight']:.2f})]"
        )

    def to_dict(self) -> dict[str, Any]:
        """What predictor.json records of the fit (JSON-able)."""
        return {
            "method": "ridge mixture on source latencies and compact features, weights from tempered leave-one-out",
            "coef": [float(c) for c in self.coef],
            "intercept": float(self.intercept),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "floor": float(self.floor),
            "n_sources": self.n_sources,
            "n_train": self.n_train,
            "candidates": self.candidates,
        }


def _design(sources: np.ndarray | None, features: np.ndarray | None) -> np.ndarray:
    blocks = [np.asarray(b, dtype=np.float64) for b in (sources, features) if b is not None]
    blocks = [b.reshape(len(b), -1) for b in blocks]
    if not blocks or sum(b.shape[1] for b in blocks) == 0:
        raise ValueError("a transferred predictor needs source latencies, architecture features or both")
    if len({len(b) for b in blocks}) > 1:
        raise ValueError(f"sources and features disagree on the number of rows: {[len(b) for b in blocks]}")
    X = np.concatenate(blocks, axis=1)
    if not np.all(np.isfinite(X)):
        raise ValueError("source latencies and features must be finite numbers")
    return X


def _candidates(k: int, p: int, settings: TransferSettings) -> list[_Candidate]:
    src, feat = np.arange(k), np.arange(k, k + p)
    out = []
    if k:
        out.append(_Candidate("sources", src, np.ones(k)))
    if p:
        out.append(_Candidate("features", feat, np.ones(p)))
    if k and p:
        for m in settings.feature_penalties:
            penalty = np.concatenate([np.ones(k), np.full(p, float(m))])
            out.append(_Candidate(f"sources+features/{m:g}", np.concatenate([src, feat]), penalty))
    return out


def _ridge_loo(Z: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Ridge with an unpenalised intercept: (coef, intercept, leave-one-out predictions)."""
    zm, ym = Z.mean(0), y.mean()
    Zc = Z - zm
    A = Zc.T @ Zc + np.diag(penalty)
    coef = np.linalg.solve(A, Zc.T @ (y - ym))
    hat = np.einsum("ij,ji->i", Zc, np.linalg.solve(A, Zc.T)) + 1.0 / len(y)
    residual = y - (Zc @ coef + ym)
    loo = y - residual / np.clip(1.0 - hat, 1e-6, None)
    return coef, float(ym - zm @ coef), loo


def _best_alpha(
    Z: np.ndarray, y: np.ndarray, cand: _Candidate, alphas: Sequence[float], floor: float, offset: float
) -> tuple[float, float, np.ndarray, float, np.ndarray]:
    """(LOO MSE of log(latency + offset), alpha, coef over all columns, intercept, LOO
    predictions) of the candidate at the alpha with the smallest leave-one-out error."""
    best = None
    for alpha in alphas:
        coef, b, loo = _ridge_loo(Z[:, cand.columns], y, alpha * cand.penalty)
        mse = float(np.mean((np.log(np.maximum(loo, floor) + offset) - np.log(y + offset)) ** 2))
        if best is None or mse < best[0]:
            full = np.zeros(Z.shape[1])
            full[cand.columns] = coef
            best = (mse, float(alpha), full, b, loo)
    return best


def _check_targets(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) < 2:
        raise ValueError(f"n = {len(y)} measurements is not allowed; a transferred predictor needs at least 2")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("measured latencies must be positive finite numbers")
    return y


def fit_transfer(
    y: np.ndarray,
    sources: np.ndarray | None = None,
    features: np.ndarray | None = None,
    settings: TransferSettings | None = None,
) -> TransferModel:
    """Fit the target's latencies `y` (n measured rows) from the sources' predicted latencies at
    those rows (n, k) and compact architecture features (n, p); either may be None (no sources:
    the one-device fallback). Columns are standardised on the measured rows."""
    settings = settings or TransferSettings()
    y = _check_targets(y)
    X = _design(sources, features)
    if len(X) != len(y):
        raise ValueError(f"{len(y)} measurements but {len(X)} rows of sources/features")
    k = 0 if sources is None else np.asarray(sources).reshape(len(y), -1).shape[1]
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (X - mean) / scale
    floor = settings.floor_fraction * float(y.min())
    offset = settings.log_offset * float(np.median(y))
    cands = _candidates(k, X.shape[1] - k, settings)
    fits = [(c.name, *_best_alpha(Z, y, c, settings.alphas, floor, offset)) for c in cands]
    mses = np.array([max(f[1], 1e-300) for f in fits])
    logw = -0.5 * settings.tempering * len(y) * np.log(mses / mses.min())
    weights = np.exp(logw - logw.max())
    weights /= weights.sum()
    coef = sum(w * f[3] for w, f in zip(weights, fits))
    intercept = float(sum(w * f[4] for w, f in zip(weights, fits)))
    loo = soft_floor(sum(w * f[5] for w, f in zip(weights, fits)), floor)
    table = [
        {"name": f[0], "alpha": f[2], "loo_mse_log": f[1], "weight": float(w)} for f, w in zip(fits, weights)
    ]  # fmt: skip
    return TransferModel(mean, scale, coef, intercept, floor, k, len(y), table, loo)


def _standardise(X: np.ndarray) -> np.ndarray:
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 1e-12, sd, 1.0)


def choose_measurements(
    n: int,
    seed: int = 0,
    sources: np.ndarray | None = None,
    features: np.ndarray | None = None,
    measured: Sequence[int] = (),
    pool: int = 3000,
) -> np.ndarray:
    """Indices of `n` rows to measure next (beyond `measured`, which count as chosen): from a
    pool of `pool` rows drawn by `default_rng(seed)`, greedily the row of largest predictive
    variance of a linear model on the standardised log source latencies and features (a
    D-optimal design; the first row is random, unless some were `measured`). Needs source
    latencies, features or both. Deterministic for a seed; the first n of a larger n are the same."""
    check_int("n", n, 1)
    given = [b for b in (sources, features) if b is not None]
    rows = len(given[0]) if given else 0
    blocks = []
    if sources is not None:
        S = np.asarray(sources, dtype=np.float64).reshape(rows, -1)
        if np.any(S <= 0):
            raise ValueError("source latencies must be positive to choose measurements from them")
        blocks.append(np.log(S))
    if features is not None:
        blocks.append(np.asarray(features, dtype=np.float64).reshape(rows, -1))
    if not blocks:
        raise ValueError("choose_measurements needs source latencies, features or both")
    measured = [int(i) for i in measured]
    if n > rows - len(set(measured)):
        raise ValueError(f"n = {n} is more than the {rows - len(set(measured))} rows not measured yet")
    rng = np.random.default_rng(seed)
    free = np.setdiff1d(np.arange(rows), measured)
    cand = np.sort(rng.choice(free, min(pool, len(free)), replace=False))
    X = _standardise(np.concatenate(blocks, axis=1))
    X = np.column_stack([X, np.ones(rows)])
    return _greedy_d_optimal(X, cand, measured, n, rng)


def _greedy_d_optimal(
    X: np.ndarray, cand: np.ndarray, measured: list[int], n: int, rng: np.random.Generator
) -> np.ndarray:
    A_inv = np.eye(X.shape[1]) / 1e-3
    for i in measured:
        A_inv = _rank_one(A_inv, X[i])
    chosen: list[int] = []
    taken = np.zeros(len(cand), dtype=bool)
    Xc = X[cand]
    for step in range(n):
        if step == 0 and not measured:
            j = int(rng.integers(len(cand)))
        else:
            var = np.einsum("ij,jk,ik->i", Xc, A_inv, Xc)
            var[taken] = -np.inf
            j = int(np.argmax(var))
        taken[j] = True
        chosen.append(int(cand[j]))
        A_inv = _rank_one(A_inv, Xc[j])
    return np.array(chosen, dtype=np.int64)


def _rank_one(A_inv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(A + x x^T)^-1 from A^-1 (Sherman-Morrison)."""
    v = A_inv @ x
    return A_inv - np.outer(v, v) / (1.0 + x @ v)


def smooth_columns(features: np.ndarray, columns: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each column of fully measured source latencies (rows, k) replaced by out-of-fold
    predictions of gradient-boosted trees on `features` (log target): what a fitted predictor
    of that device says about an architecture it was not fitted on, without the single
    measurement's noise. Deterministic for a seed."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    columns = np.asarray(columns, dtype=np.float64)
    columns = columns.reshape(len(columns), -1)
    if np.any(columns <= 0) or not np.all(np.isfinite(columns)):
        raise ValueError("source latencies must be positive finite numbers")
    if folds < 2 or folds > len(columns):
        raise ValueError(f"folds = {folds} is not allowed with {len(columns)} rows; use 2..{len(columns)}")
    order = np.random.default_rng(seed).permutation(len(columns))
    out = np.empty_like(columns)
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        for c in range(columns.shape[1]):
            model = HistGradientBoostingRegressor(max_iter=200, early_stopping=False, random_state=seed)
            model.fit(features[train], np.log(columns[train, c]))
            out[part, c] = np.exp(model.predict(features[part]))
    return out
