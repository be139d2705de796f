"""Quality of a predictor on held-out measurements, and its calibration plot.

Ranking is what a search needs (Kendall tau, Spearman); budgets need calibrated values (RMSE,
MAPE, share of predictions within +-5% and +-10% of the measurement). MAPE is in percent;
the within shares are fractions in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

METRIC_KEYS = ("kendall_tau", "spearman", "rmse", "mape", "within_5pct", "within_10pct")


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} measurements but {len(y_pred)} predictions")
    if len(y_true) < 2:
        raise ValueError(f"need at least 2 held-out rows to score a predictor, got {len(y_true)}")
    return y_true, y_pred


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall's tau-b (ties in either list handled), nan when either list is constant."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(stats.kendalltau(y_true, y_pred).statistic)


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rho, nan when either list is constant (e.g. a predictor clipped to its bound)."""
    y_true, y_pred = _pair(y_true, y_pred)
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return float("nan")
    return float(stats.spearmanr(y_true, y_pred).statistic)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y_pred - y_true) ** 2)))


def relative_errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true, y_pred = _pair(y_true, y_pred)
    if np.any(y_true == 0):
        raise ValueError("relative errors need non-zero measurements; a measured value is 0")
    return np.abs(y_pred - y_true) / np.abs(y_true)


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    return float(100.0 * np.mean(relative_errors(y_true, y_pred)))


def within(y_true: np.ndarray, y_pred: np.ndarray, tolerance: float) -> float:
    """Share of predictions within `tolerance` (0.1 = +-10%) of the measurement."""
    return float(np.mean(relative_errors(y_true, y_pred) <= tolerance + 1e-12))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of `METRIC_KEYS` (relative ones are nan when a measurement is 0)."""
    has_zero = np.any(np.asarray(y_true) == 0)
    nan = float("nan")
    return {
        "kendall_tau": kendall_tau(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "mape": nan if has_zero else mape(y_true, y_pred),
        "within_5pct": nan if has_zero else within(y_true, y_pred, 0.05),
        "within_10pct": nan if has_zero else within(y_true, y_pred, 0.10),
    }


def calibration_plot(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, title: str, label: str = "value"
) -> Path:
    """Predicted against measured with the y = x line and a +-10% band; log axes when every
    value is positive and they span more than a factor 3. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from ofa.io import atomic_write_bytes

    y_true, y_pred = _pair(y_true, y_pred)
    lo = float(min(y_true.min(), y_pred.min()))
    hi = float(max(y_true.max(), y_pred.max()))
    log = lo > 0 and hi / lo > 3
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    ax.scatter(y_true, y_pred, s=6, alpha=0.5, edgecolors="none")
    line = np.geomspace(lo, hi, 100) if log else np.linspace(lo, hi, 100)
    ax.plot(line, line, color="black", lw=1, label="y = x")
    if lo > 0:
        ax.fill_between(line, line * 0.9, line * 1.1, color="gray", alpha=0.2, label="+-10%")
    if log:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers (5, 10, 20), not 2 x 10^1
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"measured {label}")
    ax.set_ylabel(f"predicted {label}")
    m = regression_metrics(y_true, y_pred)
    ax.set_title(
        f"{title}\ntau {m['kendall_tau']:.3f}, within 10% {m['within_10pct']:.3f}, n {len(y_true)}", fontsize=9
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
