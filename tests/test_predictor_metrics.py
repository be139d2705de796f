"""Metrics against their definitions, computed here independently (brute force / numpy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from predictors import metrics as M


def brute_kendall_tau_b(x, y) -> float:
    """tau-b from its definition: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2))."""
    conc = disc = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            ties_x += 1
            ties_y += 1
        elif dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        else:
            conc += dx == dy
            disc += dx != dy
    n0 = len(x) * (len(x) - 1) / 2
    return (conc - disc) / math.sqrt((n0 - ties_x) * (n0 - ties_y))


def average_ranks(v) -> np.ndarray:
    v = np.asarray(v)
    ranks = np.empty(len(v))
    for value in np.unique(v):
        where = np.flatnonzero(v == value)
        below = np.sum(v < value)
        ranks[where] = below + (len(where) + 1) / 2
    return ranks


@pytest.fixture
def pairs():
    rng = np.random.default_rng(42)
    y = rng.lognormal(1.0, 0.5, 60)
    p = y * rng.normal(1.0, 0.08, 60)
    y_tied, p_tied = np.round(y, 0), np.round(p, 0)  # many ties on both sides
    return [(y, p), (y_tied, p_tied), (y, y[::-1]), (np.arange(1.0, 9.0), np.arange(1.0, 9.0))]


def test_rank_correlations_match_their_definitions(pairs):
    for y, p in pairs:
        assert M.kendall_tau(y, p) == pytest.approx(brute_kendall_tau_b(y, p), abs=1e-12)
        ry, rp = average_ranks(y), average_ranks(p)
        assert M.spearman(y, p) == pytest.approx(np.corrcoef(ry, rp)[0, 1], abs=1e-12)
    y = np.arange(1.0, 11.0)
    assert M.kendall_tau(y, -y) == pytest.approx(-1.0) and M.spearman(y, y**3) == pytest.approx(1.0)


def test_error_metrics_match_numpy(pairs):
    for y, p in pairs[:2]:
        y = np.where(y == 0, 1.0, y)
        rel = np.abs(p - y) / np.abs(y)
        assert M.rmse(y, p) == pytest.approx(np.sqrt(np.mean(np.square(p - y))))
        assert M.mape(y, p) == pytest.approx(100 * np.mean(rel))
        assert M.within(y, p, 0.05) == pytest.approx(np.mean(rel <= 0.05))
        assert M.within(y, p, 0.10) == pytest.approx(np.mean(rel <= 0.10))


def test_within_and_mape_on_a_hand_example():
    y = np.array([100.0, 100.0, 100.0, 200.0])
    p = np.array([104.0, 94.0, 111.0, 220.0])  # errors 4%, 6%, 11%, 10% (the edge counts)
    assert M.within(y, p, 0.05) == 0.25
    assert M.within(y, p, 0.10) == 0.75
    assert M.mape(y, p) == pytest.approx((4 + 6 + 11 + 10) / 4)
    assert M.rmse(y, p) == pytest.approx(math.sqrt((16 + 36 + 121 + 400) / 4))


def test_regression_metrics_keys_and_bad_input():
    y = np.array([1.0, 2.0, 3.0])
    m = M.regression_metrics(y, y * 1.02)
    assert tuple(m) == M.METRIC_KEYS and m["within_5pct"] == 1.0 and m["kendall_tau"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 measurements but 2 predictions"):
        M.rmse(y, y[:2])
    with pytest.raises(ValueError, match="at least 2"):
        M.kendall_tau(y[:1], y[:1])
    zero = M.regression_metrics(np.array([0.0, 1.0]), np.array([0.1, 1.0]))
    assert math.isnan(zero["mape"]) and zero["rmse"] == pytest.approx(math.sqrt(0.01 / 2))


def test_calibration_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.lognormal(2, 0.6, 200)
    path = M.calibration_plot(y, y * rng.normal(1, 0.05, 200), tmp_path / "cal.png", "test")
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[0] > 100
    # accuracy-like values (narrow range): linear axes, still a PNG
    acc = rng.uniform(0.9, 0.99, 50)
    assert M.calibration_plot(acc, acc + 0.001, tmp_path / "acc.png", "acc").read_bytes()[:4] == b"\x89PNG"


def test_rank_correlations_of_a_constant_prediction_are_nan_without_a_warning():
    import warnings

    from predictors.metrics import kendall_tau, spearman

    truth = np.array([0.91, 0.93, 0.95, 0.97])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns on constant input; we answer nan instead
        assert math.isnan(spearman(truth, np.full(4, 0.95)))
        assert math.isnan(spearman(np.full(4, 0.95), truth))
    assert math.isnan(kendall_tau(truth, np.full(4, 0.95)))
    assert spearman(truth, truth[::-1]) == pytest.approx(-1.0)
