"""What the measurement loop (`search.loop`) expects a candidate to gain over a budget's best
measured objective, and the measurement noise that expectation rests on."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from scipy.special import ndtr


def expected_gain(per_tree: np.ndarray, noise: float, incumbent: float) -> np.ndarray:
    """Per candidate, E[max(y - incumbent, 0)] for y one tree's prediction plus normal
    measurement noise, averaged over the trees."""
    sigma = max(noise, 1e-6)
    z = (per_tree - incumbent) / sigma
    # ndtr and the density written out: scipy.stats.norm's checks cost more than the sums here.
    return (sigma * (z * ndtr(z) + np.exp(-0.5 * z * z) / _SQRT_2PI)).mean(0)


_SQRT_2PI = np.sqrt(2 * np.pi)


def group_noise(groups: Sequence[Hashable] | None, rows: np.ndarray, y: np.ndarray) -> float:
    """Pooled within-group standard deviation of the measured objective (at least 3 degrees
    of freedom), else a tenth of its interquartile range."""
    if groups is not None:
        by: dict[Hashable, list[float]] = {}
        for r, v in zip(rows, y):
            by.setdefault(groups[r], []).append(float(v))
        dof = sum(len(v) - 1 for v in by.values())
        if dof >= 3:
            ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in by.values())
            return max(float(np.sqrt(ss / dof)), 1e-6)
    q75, q25 = np.percentile(y, [75, 25])
    return max(0.1 * float(q75 - q25), 1e-6)
