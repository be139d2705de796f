"""Pareto dominance and hypervolume on 'higher is better' arrays (multiply minimised
metrics by -1 first: `Metric.sign`)."""

from __future__ import annotations

import numpy as np


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of the rows of `points` (n, m) that no other row dominates (all >=, one >).

    Equal rows do not dominate each other, so duplicates of a front point all stay."""
    p = np.asarray(points, dtype=np.float64)
    n = p.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    keep = np.ones(n, dtype=bool)
    # Sort by the first metric, best first: only earlier rows can dominate a later one
    # (or rows equal in the first metric), which keeps the inner test small on fronts.
    order = np.lexsort(tuple(-p[:, j] for j in reversed(range(p.shape[1]))))
    front: list[int] = []
    for i in order:
        if front:
            f = p[front]
            dominated = np.all(f >= p[i], axis=1) & np.any(f > p[i], axis=1)
            if dominated.any():
                keep[i] = False
                continue
        front.append(i)
    return keep


def hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by `points` (n, 2), higher is better in both, above `reference` (2,)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(reference, dtype=np.float64)
    p = p[np.all(p > ref, axis=1)]
    if p.shape[0] == 0:
        return 0.0
    p = p[non_dominated(p)]
    p = p[np.argsort(-p[:, 0])]  # x descending -> y ascending along a front
    area, prev_y = 0.0, ref[1]
    for x, y in p:
        if y > prev_y:
            area += (x - ref[0]) * (y - prev_y)
            prev_y = y
    return float(area)
