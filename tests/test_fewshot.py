"""A new device from a few measurements (predictors.transfer): the transferred fit and its
fallback, the choice of what to measure, ofa-fewshot-bench, and the ofa-fit / ofa-profile paths."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from app.config import compose
from app.fewshot_bench import bench, read_fewshot_table
from app.fit import fit_from_config
from app.profile import run_profile
from ofa.io import atomic_write_csv
from ofa.space import SPACES, ArchConfig
from predictors import load_predictor
from predictors.metrics import METRIC_KEYS
from predictors.models import build_model
from predictors.predictor import Predictor
from predictors.sampling import sample_for_transfer
from predictors.table import read_table
from predictors.transfer import choose_measurements, fit_transfer
from predictors.transfer_sources import resolve_sources, source_latencies
from tests.conftest import REPO_ROOT, user_error_line
from tests.predictor_tables import write_gpu_slice
from tests.test_profiling import TINY_PROFILE as PROFILING_PROFILE
from tests.test_profiling import quiet

MNIST = SPACES["mnist"]
CPU_ORT = REPO_ROOT / "hw_profiles" / "cpu-ort"
NB201 = "nb201_accuracy_latency.csv"
NB201_DEVICES = ["latency_ms_gold_6226", "latency_ms_titan_rtx_1", "latency_ms_pixel3", "latency_ms_raspi4"]
GPU_DEVICES = ["latency_ms_titan_rtx_b1", "latency_ms_titan_rtx_b32", "latency_ms_2080ti_b1", "latency_ms_2080ti_b32"]
# The profiling tests' tiny torch-cpu profile, with groups of three.
TINY_PROFILE = {**PROFILING_PROFILE, "noise": {**PROFILING_PROFILE["noise"], "group_size": 3}}


@pytest.fixture
def profiles_dir(tmp_path) -> Path:
    """A profiles folder with a tiny device to measure on and `cpu-ort` (its real fitted predictor) as a source."""
    root = tmp_path / "profiles"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "profile.yaml").write_text(yaml.safe_dump(TINY_PROFILE))
    shutil.copytree(CPU_ORT / "predictors", root / "cpu-ort" / "predictors")
    return root


@pytest.fixture(scope="module")
def nb201():
    path = REPO_ROOT.parent / "shared" / "data" / NB201
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    return read_fewshot_table(path, NB201_DEVICES)


def few_rows(tmp_path: Path, n: int = 10, start: int = 0) -> Path:
    """`n` real cpu-ort measurements: the new device's few rows."""
    with open(CPU_ORT / "measurements.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)[start : start + n]
    return atomic_write_csv(tmp_path / "few.csv", rows, reader.fieldnames)


# --- the method -----------------------------------------------------------------------------------
def test_ten_measurements_with_sources_beat_a_one_hot_ridge_and_the_fallback_works(nb201):
    """Pixel 3 from the three other devices' (raw) columns, ten cells chosen by the design."""
    target = nb201.columns["latency_ms_pixel3"]
    S = np.column_stack([nb201.columns[c] for c in NB201_DEVICES if c != "latency_ms_pixel3"])
    chosen = choose_measurements(10, 0, S, nb201.compact)
    model = fit_transfer(target[chosen], S[chosen], nb201.compact[chosen])
    rho = stats.spearmanr(model.predict(S, nb201.compact), target).statistic
    X = np.column_stack([nb201.onehot, np.ones(len(nb201))])
    w = np.linalg.lstsq(X[chosen], target[chosen], rcond=None)[0]
    rho_onehot = stats.spearmanr(X @ w, target).statistic
    assert rho > 0.9 and rho > rho_onehot + 0.1  # a one-hot least-squares fit on the same ten cells
    assert abs(sum(c["weight"] for c in model.candidates) - 1) < 1e-9
    alone = fit_transfer(target[chosen], None, nb201.compact[chosen])  # no sources: the one-device fit
    pred = alone.predict(None, nb201.compact)
    assert [c["name"] for c in alone.candidates] == ["features"] and np.all(pred > 0)
    assert stats.spearmanr(pred, target).statistic > 0.5
    with pytest.raises(ValueError, match="needs source latencies, architecture features or both"):
        fit_transfer(target[chosen], None, None)
    with pytest.raises(ValueError, match="n = 1 measurements is not allowed"):
        fit_transfer(target[:1], S[:1], None)


def test_the_chosen_ten_are_deterministic_for_a_seed(nb201):
    S = np.column_stack([nb201.columns[c] for c in NB201_DEVICES[:3]])
    first = choose_measurements(10, 3, S, nb201.compact)
    assert np.array_equal(first, choose_measurements(10, 3, S, nb201.compact))
    assert len(set(first.tolist())) == 10
    assert not np.array_equal(first, choose_measurements(10, 4, S, nb201.compact))
    assert np.array_equal(choose_measurements(20, 3, S, nb201.compact)[:10], first)  # measuring more extends it
    more = choose_measurements(5, 3, S, nb201.compact, measured=first)
    assert not set(more.tolist()) & set(first.tolist())
    # The same for sub-networks, from a source device's fitted predictor.
    predictor = load_predictor(CPU_ORT / "predictors" / "latency_ms", MNIST)
    latencies = lambda archs: predictor.predict(archs)[:, None]  # noqa: E731
    archs = sample_for_transfer(MNIST, 10, 0, latencies, pool=500)
    assert archs == sample_for_transfer(MNIST, 10, 0, latencies, pool=500) and len(set(archs)) == 10
    assert archs != sample_for_transfer(MNIST, 10, 1, latencies, pool=500)


# --- ofa-fewshot-bench -----------------------------------------------------------------------------------
def _nb201_slice(shared_data: Path, path: Path, rows: int) -> Path:
    with open(shared_data / NB201, newline="") as f:
        reader = csv.DictReader(f)
        return atomic_write_csv(path, list(reader)[:rows], reader.fieldnames)


@pytest.mark.parametrize("kind", ["nb201", "ofa"])
def test_fewshot_bench_writes_both_files_and_reveals_at_most_n(shared_data, tmp_path, kind):
    if kind == "nb201":
        table, columns = _nb201_slice(shared_data, tmp_path / "t.csv", 400), NB201_DEVICES
    else:
        table, columns = write_gpu_slice(shared_data, tmp_path / "t.csv", 400), GPU_DEVICES
    target, sources = columns[2], [c for c in columns if c != columns[2]]
    out = tmp_path / "out"
    cfg = compose("fewshot_bench", [f"table={table}", f"sources=[{','.join(sources)}]", f"target={target}",
                                    "n=10", "seed=1", f"out={out}"])  # fmt: skip
    console = quiet()
    result = bench(cfg, console)
    assert result.spent == 10 and len(result.measured) == 10
    with open(out / "measured.csv", newline="") as f:
        measured = list(csv.DictReader(f))
    with open(out / "predictions.csv", newline="") as f:
        predicted = list(csv.DictReader(f))
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ["arch"] if kind == "nb201" else ["ks", "e", "d", "r"]
    assert len(measured) == 10 and list(measured[0]) == ["query", *keys, target]
    assert len(predicted) == len(rows) == 400 and list(predicted[0]) == [*keys, "predicted"]
    assert [[p[k] for k in keys] for p in predicted] == [[r[k] for k in keys] for r in rows]
    by_key = {tuple(r[k] for k in keys): float(r[target]) for r in rows}
    assert all(float(m[target]) == by_key[tuple(m[k] for k in keys)] for m in measured)
    assert all(float(p["predicted"]) > 0 for p in predicted)
    text = console.file.getvalue()
    assert "spearman" in text and "kendall tau" in text and "written:" in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("target=nope", "has no column 'nope'; allowed: latency_ms_gold_6226, latency_ms_titan_rtx_1"),
        ("sources=[cifar10_acc]", "column 'cifar10_acc' is not a device's cost (named latency*, power* or energy*)"),
        ("n=1", "n = 1 is not allowed; allowed: an integer from 2 to 400"),
        ("table=/no/such.csv", "table /no/such.csv does not exist"),
        ("sources=[latency_ms_pixel3]", "target = 'latency_ms_pixel3' is also a source"),
        ("strategy=best", "strategy = 'best' is not allowed; allowed: transfer, random"),
    ],
)
def test_fewshot_bench_bad_input_is_one_line(shared_data, tmp_path, capsys, override, message):
    table = _nb201_slice(shared_data, tmp_path / "t.csv", 400)
    cfg = compose("fewshot_bench", [f"table={table}", f"out={tmp_path / 'out'}", override])
    line = user_error_line(lambda: bench(cfg, quiet()), capsys)
    assert message in line
    assert not (tmp_path / "out" / "predictions.csv").exists()


# --- ofa-fit sources=[...] ----------------------------------------------------------------------------
def test_ofa_fit_with_sources_saves_an_ordinary_predictor_that_names_them(profiles_dir, tmp_path):
    few = few_rows(tmp_path, 10, start=40)
    out = tmp_path / "fitted"
    cfg = compose("fit", [f"table={few}", "target=latency_ms", f"out={out}", "sources=[cpu-ort]",
                          f"profiles_dir={profiles_dir}", f"test_table={CPU_ORT / 'measurements.csv'}",
                          "transfer_pool=1500"])  # fmt: skip
    result = fit_from_config(cfg, console=quiet())
    predictor = load_predictor(out, MNIST)  # the existing loader, nothing transfer-specific
    (source,) = predictor.sources
    assert source["name"] == "cpu-ort" and source["space_fingerprint"] == MNIST.fingerprint()
    assert source["kind"] == "device predictor" and len(source["sha256"]) == 64
    assert set(METRIC_KEYS) <= set(predictor.metrics) and predictor.metrics["n_train"] == 10
    held = read_table(CPU_ORT / "measurements.csv", "latency_ms", MNIST)
    pred = predictor.predict(held.archs)
    assert np.all(pred > 0) and np.allclose(pred, result.predictor.predict(held.archs))
    m = result.metrics
    assert m["kendall_tau"] > m["baseline_onehot_ridge"]["kendall_tau"] + 0.1
    assert m["distillation_agreement"]["kendall_tau"] > 0.95


def test_a_source_of_another_space_is_refused_in_one_line(shared_data, profiles_dir, tmp_path, capsys):
    w10 = SPACES["ofa_mbv3_w10"]
    gpu = read_table(write_gpu_slice(shared_data, tmp_path / "gpu.csv", 60), GPU_DEVICES[1], w10)
    other = Predictor(w10, "latency_ms", build_model("ridge", {"feature_set": "analytic"}), "none")
    other.fit_arrays(gpu.arrays, gpu.y).save(profiles_dir / "gpu" / "predictors" / "latency_ms")
    few = few_rows(tmp_path)
    base = [f"table={few}", "target=latency_ms", f"out={tmp_path / 'o'}", f"profiles_dir={profiles_dir}"]
    line = user_error_line(lambda: fit_from_config(compose("fit", [*base, "sources=[gpu]"]), console=quiet()), capsys)
    assert "source 'gpu'" in line and "ofa_mbv3_w10" in line and "'mnist'" in line
    rows = [{**a.to_csv_fields(), "latency_ms": y, "fingerprint": w10.fingerprint()} for a, y in zip(gpu.archs, gpu.y)]
    table = atomic_write_csv(tmp_path / "w10.csv", rows, ["ks", "e", "d", "r", "latency_ms", "fingerprint"])
    cfg = compose("fit", [*base, f"sources=[{table}]"])
    line = user_error_line(lambda: fit_from_config(cfg, console=quiet()), capsys)
    assert "belongs to space ofa_mbv3_w10" in line and "a source must be profiled on the same space" in line
    assert not (tmp_path / "o" / "predictor.json").exists()


def test_a_missing_source_is_one_clear_line(profiles_dir, tmp_path, capsys):
    base = [f"table={few_rows(tmp_path)}", "target=latency_ms", f"out={tmp_path / 'o'}", f"profiles_dir={profiles_dir}"]
    cfg = compose("fit", [*base, "sources=[nosuch]"])
    line = user_error_line(lambda: fit_from_config(cfg, console=quiet()), capsys)
    assert line.startswith("error: FileNotFoundError: source 'nosuch' is neither a table file nor a device")
    assert "devices that can be sources: cpu-ort" in line
    cfg = compose("fit", [*base, f"sources=[{tmp_path / 'gone.csv'}]"])
    line = user_error_line(lambda: fit_from_config(cfg, console=quiet()), capsys)
    assert f"source '{tmp_path / 'gone.csv'}': table {tmp_path / 'gone.csv'} does not exist" in line


def test_sources_from_a_measurement_table_are_fitted_on_it(tmp_path):
    (source,) = resolve_sources([str(CPU_ORT / "measurements.csv")], MNIST, "latency_ms", tmp_path)
    assert source.kind == "table" and source.record()["space_fingerprint"] == MNIST.fingerprint()
    held = read_table(CPU_ORT / "measurements.csv", "latency_ms", MNIST)
    S = source_latencies([source], held.archs)
    assert S.shape == (len(held), 1) and stats.kendalltau(S[:, 0], held.y).statistic > 0.8


# --- ofa-profile strategy=transfer -------------------------------------------------------------------
def test_profile_with_the_transfer_strategy_measures_exactly_the_chosen(profiles_dir, tmp_path, capsys):
    out = tmp_path / "m.csv"
    base = ["device=tiny", f"profiles_dir={profiles_dir}", "n_subnets=3", f"output={out}"]
    report = run_profile(compose("profile", [*base, "strategy=transfer", "sources=[cpu-ort]"]), quiet())
    sources = resolve_sources(["cpu-ort"], MNIST, "latency_ms", profiles_dir)
    chosen = sample_for_transfer(MNIST, 3, 0, lambda archs: source_latencies(sources, archs))
    with open(out, newline="") as f:
        measured = {ArchConfig.from_csv_fields(r, MNIST) for r in csv.DictReader(f)}
    assert report.total == 3 and measured == set(chosen)
    line = user_error_line(lambda: run_profile(compose("profile", [*base, "strategy=transfer"]), quiet()), capsys)
    assert "strategy = 'transfer' needs sources=" in line
    line = user_error_line(lambda: run_profile(compose("profile", [*base, "sources=[cpu-ort]"]), quiet()), capsys)
    assert "sources are used by strategy=transfer only" in line
