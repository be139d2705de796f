"""Test-retest agreement of two measurement tables of the same sub-networks.

The ranking agreement (Kendall tau) of two runs is the ceiling any latency predictor can
reach on this device: a predictor cannot rank the sub-networks more consistently than the
device measures them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ofa.space import ArchConfig
from predictors.measure.timing import quantiles


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either sequence accounted for), O(n^2): fine for hundreds."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"kendall_tau needs two sequences of equal length >= 2, got {len(x)} and {len(y)}")
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    concordance = float(np.sum(dx * dy))
    denominator = float(np.sqrt(np.sum(dx != 0) * np.sum(dy != 0)))
    return concordance / denominator if denominator else float("nan")


@dataclass(frozen=True)
class RetestSummary:
    n: int
    kendall_tau: float
    median_rel_diff: float  # |a - b| / mean(a, b), median over the sub-networks
    p90_rel_diff: float
    max_rel_diff: float
    ratio_median: float  # median of b / a: a systematic shift between the runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(
    rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]], column: str = "latency_ms"
) -> RetestSummary:
    """Match two tables on `ks,e,d,r` and compare `column` of the sub-networks in both."""
    a = {ArchConfig.from_csv_fields(r).key(): float(r[column]) for r in rows_a}
    b = {ArchConfig.from_csv_fields(r).key(): float(r[column]) for r in rows_b}
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise ValueError(f"the two tables share {len(common)} sub-networks; at least 2 are needed")
    va, vb = [a[k] for k in common], [b[k] for k in common]
    rel = [abs(x - y) / ((x + y) / 2) for x, y in zip(va, vb)]
    return RetestSummary(
        n=len(common),
        kendall_tau=kendall_tau(va, vb),
        median_rel_diff=statistics.median(rel),
        p90_rel_diff=quantiles(rel, (0.9,))[0],
        max_rel_diff=max(rel),
        ratio_median=statistics.median(y / x for x, y in zip(va, vb)),
    )
