"""The model interface and the robust fitting every model shares.

Measurements have heavy tails (contention on a shared device inflates some figures 1.5-4x),
so every model fits with a robust loss: Huber weights (IRLS) for ridge and the lookup table's
scale and offset, pseudo-Huber for the trees, Huber for the MLP. The Huber threshold comes
from the residual scale (MAD) of a linear pilot fit, so it adapts to the target's units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ofa.space import MBV3Space
from predictors.features import ArchArrays

HUBER_C = 1.345  # 95% efficiency under Gaussian noise


def robust_scale(residuals: np.ndarray) -> float:
    """Normal-consistent MAD of residuals (a floor keeps it positive on exact fits)."""
    mad = np.median(np.abs(residuals - np.median(residuals))) * 1.4826
    return float(max(mad, 1e-9 * (np.std(residuals) + 1.0), 1e-12))


class Standardizer:
    """Column means and standard deviations (constant columns keep a scale of 1)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        std = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


def huber_ridge(
    Z: np.ndarray, y: np.ndarray, alpha: float, robust: bool, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """Ridge (unpenalised intercept) on standardised `Z`, with Huber weights by IRLS when
    `robust`. Returns (coefficients, intercept)."""
    A = np.column_stack([Z, np.ones(len(Z))])
    penalty = alpha * np.eye(A.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(A.T @ A + penalty, A.T @ y)
    if robust:
        for _ in range(iterations):
            residuals = y - A @ w
            u = np.abs(residuals) / (HUBER_C * robust_scale(residuals))
            weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
            new = np.linalg.solve(A.T @ (A * weights[:, None]) + penalty, A.T @ (weights * y))
            done = np.max(np.abs(new - w)) <= 1e-8 * (1.0 + np.max(np.abs(w)))
            w = new
            if done:
                break
    return w[:-1], float(w[-1])


class Model(ABC):
    """A regression model with its own features. Subclasses register in `MODELS`."""

    kind: ClassVar[str]

    @abstractmethod
    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray: ...

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Model: ...

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Hyper-parameters (JSON), enough to rebuild an unfitted copy."""

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state: JSON-able part and arrays."""

    @abstractmethod
    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Model: ...

    def describe(self) -> str:
        return self.kind

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Model:
        """An unfitted model from its `config()`."""
        return cls(**config)
