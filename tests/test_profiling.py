"""ofa-profile: sampling, rows, resume after an interruption (an exception, a killed process),
the lookup-table mode, and the test-retest comparison."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from rich.console import Console

from app.profile import build_supernet, run_profile
from app.shell import CONF_DIR
from ofa.networks import OFAMobileNetV3, count_macs, count_params, layer_costs
from ofa.space import SPACES, ArchConfig
from predictors.layers import lut_layers, network_layers
from predictors.measure.profile import load_profile
from predictors.profiling import LUT_COLUMNS, MEASUREMENT_COLUMNS, profile_lut, profile_subnets
from predictors.repeatability import compare_runs, kendall_tau
from predictors.sampling import macs_coverage, reference_arch, sample_spread
from tests.conftest import REPO_ROOT

MNIST = SPACES["mnist"]  # the space of the profiles' supernet (conf/supernet/mnist.yaml)
TINY_PROFILE = {
    "hardware": "this CPU (test)",
    "supernet": "mnist",
    "backend": "torch-cpu",
    "precision": "fp32",
    "batch_size": 1,
    "threads": 1,
    "timing": {"warmup": 1, "rounds": 2, "iterations_per_round": 1, "min_round_ms": None},
    "noise": {"cv_threshold": 0.5, "max_remeasure": 0, "group_size": 2},
    "power": {"sampler": "none"},
    "budgets": {"latency_ms": [5.0]},
}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture
def profiles_dir(tmp_path):
    (tmp_path / "profiles" / "tiny").mkdir(parents=True)
    (tmp_path / "profiles" / "tiny" / "profile.yaml").write_text(yaml.safe_dump(TINY_PROFILE))
    return tmp_path / "profiles"


@pytest.fixture(scope="module")
def supernet():
    return build_supernet("mnist", 0)


def read(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def keys(rows) -> list[str]:
    return [ArchConfig.from_csv_fields(r, MNIST).key() for r in rows]


def test_build_supernet_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_supernet("mnist", 5)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream did not move
    b = build_supernet("mnist", 5)
    c = build_supernet("mnist", 6)
    first = next(iter(a.state_dict()))
    assert torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], c.state_dict()[first])


# --- sampling ----------------------------------------------------------------------------------------
def test_sample_spread_covers_the_macs_range():
    archs = sample_spread(MNIST, 30, seed=0)
    assert len(set(archs)) == 30 and archs[0] == MNIST.smallest() and archs[-1] == MNIST.largest()
    macs = [count_macs(MNIST, a) for a in archs]
    assert macs == sorted(macs)
    assert macs_coverage(MNIST, archs, bins=10) == 1.0
    g = torch.Generator().manual_seed(0)
    uniform = [MNIST.sample(g) for _ in range(30)]
    assert macs_coverage(MNIST, uniform, bins=10) < 1.0  # what plain random sampling misses
    assert sample_spread(MNIST, 30, seed=0) == archs and sample_spread(MNIST, 30, seed=1) != archs
    assert reference_arch(MNIST) == MNIST.uniform(5, 4, 3, 24)
    with pytest.raises(ValueError, match="n_subnets = 1 is not allowed; allowed: an integer >= 2"):
        sample_spread(MNIST, 1)
    tiny = MNIST.with_(kernel_sizes=(3,), expand_ratios=(3,), depths=(1,), resolutions=(20,))
    with pytest.raises(ValueError, match="n_subnets = 3 is more than the 1 sub-networks"):
        sample_spread(tiny, 3)


# --- measurement rows and resume ------------------------------------------------------------------------
def test_profile_writes_rows_and_a_rerun_skips_them(profiles_dir, supernet, tmp_path):
    profile = load_profile("tiny", root=profiles_dir)
    archs = sample_spread(MNIST, 5, seed=0)
    out = tmp_path / "m.csv"
    report = profile_subnets(profile, supernet, archs, out, tmp_path / "cache")
    rows = read(out)
    assert list(rows[0]) == MEASUREMENT_COLUMNS and len(rows) == report.total == 5
    assert sorted(keys(rows)) == sorted(a.key() for a in archs)
    by_key = {k: r for k, r in zip(keys(rows), rows)}
    for arch in archs:
        row = by_key[arch.key()]
        assert int(row["macs"]) == count_macs(MNIST, arch) and int(row["params"]) == count_params(MNIST, arch)
        assert float(row["latency_p10_ms"]) <= float(row["latency_ms"]) <= float(row["latency_p90_ms"])
        assert row["fingerprint"] == MNIST.fingerprint() and row["backend"] == "torch-cpu"
        assert row["device"] == "tiny" and "torch=" in row["versions"] and row["host"]
    assert sorted({int(r["group"]) for r in rows}) == [0, 1, 2]  # groups of 2: 2 + 2 + 1
    assert float(rows[0]["ref_drift"]) == 1.0 and all(float(r["ref_latency_ms"]) > 0 for r in rows)
    before = out.read_text()
    again = profile_subnets(profile, supernet, archs, out, tmp_path / "cache")
    assert again.rows == [] and again.skipped == 5 and out.read_text() == before


def test_interrupted_run_resumes_without_loss_or_repetition(profiles_dir, supernet, tmp_path):
    profile = load_profile("tiny", root=profiles_dir)
    archs = sample_spread(MNIST, 7, seed=3)
    out = tmp_path / "m.csv"

    calls = []

    def stop_after_two_groups(done: int, total: int) -> None:
        calls.append((done, total))
        if done >= 4:
            raise KeyboardInterrupt  # what Ctrl-C does between two groups

    with pytest.raises(KeyboardInterrupt):
        profile_subnets(profile, supernet, archs, out, tmp_path / "cache", on_progress=stop_after_two_groups)
    first = read(out)
    assert len(first) == 4 and calls == [(0, 7), (2, 7), (4, 7)]  # before the first group, after each
    report = profile_subnets(profile, supernet, archs, out, tmp_path / "cache")
    rows = read(out)
    assert report.skipped == 4 and len(report.rows) == 3
    assert sorted(keys(rows)) == sorted(a.key() for a in archs)  # none lost, none repeated
    assert rows[:4] == first  # earlier rows untouched
    assert [int(r["group"]) for r in rows] == [0, 0, 1, 1, 2, 2, 3]  # group numbers continue
    assert rows[4]["run_id"] != rows[0]["run_id"]
    assert {r["ref_drift"] for r in rows[:2]} == {"1.0"}  # drift is relative to the file's first group


def test_killed_process_resumes_without_loss_or_repetition(profiles_dir, tmp_path):
    out = tmp_path / "m.csv"
    n = 12
    cmd = [sys.executable, "-m", "app.profile", "device=tiny", f"profiles_dir={profiles_dir}"]
    cmd += [f"n_subnets={n}", f"output={out}", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and len(read(out)) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read(out)
    assert 2 <= len(first) < n
    assert out.read_text().endswith("\n") and not list(tmp_path.glob(".m.csv.*"))  # no torn row, no temp left
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = read(out)
    expected = sorted(a.key() for a in sample_spread(MNIST, n, seed=0))
    assert sorted(keys(rows)) == expected and len(rows) == n
    assert rows[: len(first)] == first


def test_a_table_of_another_space_is_refused(profiles_dir, supernet, tmp_path):
    profile = load_profile("tiny", root=profiles_dir)
    out = tmp_path / "m.csv"
    row = dict.fromkeys(MEASUREMENT_COLUMNS, "")
    row.update(MNIST.smallest().to_csv_fields(), fingerprint="0123456789abcdef", group="0")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MEASUREMENT_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    with pytest.raises(
        ValueError, match=rf"line 2: fingerprint = 0123456789abcdef is not space mnist's \({MNIST.fingerprint()}\)"
    ):
        profile_subnets(profile, supernet, [MNIST.largest(), MNIST.smallest()], out, tmp_path)
    out.write_text("ks,e,d,r,latency\n")
    with pytest.raises(ValueError, match="has other columns than this version writes"):
        profile_subnets(profile, supernet, [MNIST.largest(), MNIST.smallest()], out, tmp_path)


def test_run_profile_from_the_composed_config(profiles_dir, tmp_path):
    overrides = ["device=tiny", f"profiles_dir={profiles_dir}", "n_subnets=3", f"output={tmp_path / 'm.csv'}"]
    overrides += ["+device_overrides.noise.group_size=3"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("profile", overrides=overrides)
    console = quiet()
    report = run_profile(cfg, console)
    assert report.total == 3 and {r["group"] for r in report.rows} == {0}
    text = console.file.getvalue()
    assert "tiny: torch-cpu fp32" in text and "3 measured" in text and "written:" in text


# --- lookup table ------------------------------------------------------------------------------------------
def test_layer_modules_compose_to_the_network(supernet):
    arch = MNIST.sample(torch.Generator().manual_seed(2))
    net = supernet.extract_subnet(arch).eval()
    layers = network_layers(net, batch_size=2)
    assert [cost.shape for cost, _, _ in layers] == [c.shape for c in layer_costs(MNIST, arch)]
    x = torch.randn(2, 1, arch.r, arch.r)
    with torch.no_grad():
        y = x
        for _, module, shape in layers:
            assert tuple(y.shape) == shape
            y = module.eval()(y)
        torch.testing.assert_close(y, net(x))


def test_lut_layers_hold_every_layer_shape_of_the_space(supernet):
    layers = lut_layers(supernet, batch_size=1)
    g = torch.Generator().manual_seed(0)
    for arch in [MNIST.smallest(), MNIST.largest(), *(MNIST.sample(g) for _ in range(40))]:
        assert {c.shape for c in layer_costs(MNIST, arch)} <= set(layers)
    assert len({cost.shape for cost, _, _ in layers.values()}) == len(layers)


def test_profile_lut_measures_each_shape_once(profiles_dir, tmp_path):
    profile = load_profile("tiny", root=profiles_dir, overrides={"noise": {"group_size": 6}})
    space = MNIST.with_(kernel_sizes=(3, 5), expand_ratios=(3,), depths=(1, 2), resolutions=(20,))
    torch.manual_seed(0)
    small = OFAMobileNetV3(space=space).eval()
    out = tmp_path / "lut.csv"
    report = profile_lut(profile, small, out, tmp_path / "cache")
    rows = read(out)
    shapes = set(lut_layers(small, 1))
    assert list(rows[0]) == LUT_COLUMNS and len(rows) == len(shapes) == report.total
    assert {r["shape"] for r in rows} == shapes
    assert all(float(r["latency_ms"]) > 0 for r in rows)
    stem = next(r for r in rows if r["shape"].startswith("stem:"))
    assert int(stem["macs"]) == layer_costs(space, space.smallest())[0].macs
    again = profile_lut(profile, small, out, tmp_path / "cache")
    assert again.rows == [] and again.skipped == len(shapes)


# --- test-retest ---------------------------------------------------------------------------------------
def test_kendall_tau_and_run_comparison():
    rng = np.random.default_rng(0)
    x = rng.random(12)
    assert kendall_tau(x, x * 3 + 1) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    order = np.argsort(x)
    y = x.copy()
    y[order[0]], y[order[1]] = x[order[1]], x[order[0]]  # one discordant pair of 66
    assert kendall_tau(x, y) == pytest.approx(1 - 2 * 1 / 66)
    archs = sample_spread(MNIST, 4, seed=0)
    a = [{**arch.to_csv_fields(), "latency_ms": str(v)} for arch, v in zip(archs, [1.0, 2.0, 3.0, 4.0])]
    b = [{**arch.to_csv_fields(), "latency_ms": str(v)} for arch, v in zip(archs, [1.1, 2.0, 2.9, 4.4])]
    s = compare_runs(a, b[::-1])
    assert s.n == 4 and s.kendall_tau == pytest.approx(1.0)
    assert s.max_rel_diff == pytest.approx(0.1 / 1.05) and s.ratio_median == pytest.approx((1.0 + 1.1) / 2)


def test_repeatability_bench_runs(tmp_path, profiles_dir):
    cmd = [sys.executable, "bench/profile_repeatability.py", "--device", "tiny", "--n", "4"]
    cmd += ["--profiles-dir", str(profiles_dir), "--out", str(tmp_path / "rt")]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "rt" / "summary.json").read_text())
    assert summary["n"] == 4 and -1 <= summary["kendall_tau"] <= 1 and "bar_met" in summary
    assert len(read(tmp_path / "rt" / "run1.csv")) == len(read(tmp_path / "rt" / "run2.csv")) == 4


# --- parallel profiling: merge -------------------------------------------------------------------------
def test_tables_profiled_in_parallel_merge_without_duplicates(profiles_dir, supernet, tmp_path):
    profile = load_profile("tiny", root=profiles_dir)
    a, b = tmp_path / "machine_a.csv", tmp_path / "machine_b.csv"
    archs_a, archs_b = sample_spread(MNIST, 4, seed=1), sample_spread(MNIST, 4, seed=2)
    profile_subnets(profile, supernet, archs_a, a, tmp_path / "cache", seed=1)
    profile_subnets(profile, supernet, archs_b, b, tmp_path / "cache", seed=2)
    overlap = len(set(keys(read(a))) & set(keys(read(b))))
    assert overlap >= 2  # the smallest and the largest are in every sample
    out = tmp_path / "measurements.csv"
    overrides = ["device=tiny", f"profiles_dir={profiles_dir}", "mode=merge", f"inputs=[{a},{b}]", f"output={out}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("profile", overrides=overrides)
    report = run_profile(cfg, quiet())
    merged = read(out)
    assert len(merged) == report.total == 8 - overlap and report.skipped == overlap
    assert sorted(keys(merged)) == sorted(set(keys(read(a))) | set(keys(read(b))))
    assert list(merged[0]) == MEASUREMENT_COLUMNS
    again = run_profile(cfg, quiet())  # merging the same files again adds nothing
    assert again.total == len(merged) and read(out) == merged


def test_merging_tables_of_another_space_is_refused(tmp_path):
    from ofa.archtable import merge_tables

    header = ",".join(MEASUREMENT_COLUMNS)
    row = {c: "" for c in MEASUREMENT_COLUMNS} | MNIST.smallest().to_csv_fields() | {"device": "x"}
    for name, fp in (("a.csv", "aaa"), ("b.csv", "bbb")):
        r = row | {"fingerprint": fp}
        (tmp_path / name).write_text(header + "\n" + ",".join(r[c] for c in MEASUREMENT_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="b.csv line 2: fingerprint = bbb is not the merged tables's \\(aaa\\)"):
        merge_tables([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# --- floor, normalisation to the reference, group retries ---------------------------------------------
FLOOR_REF = {
    "timing": {"statistic": "floor", "floor_quantile": 0.1, "normalize": "reference", "reference_ms": 2.0},
    "noise": {"group_retries": 1},
}


def test_normalised_rows_are_the_ratio_to_the_reference_times_the_anchor(profiles_dir, supernet, tmp_path):
    profile = load_profile("tiny", root=profiles_dir, overrides=FLOOR_REF)
    out = tmp_path / "m.csv"
    profile_subnets(profile, supernet, sample_spread(MNIST, 3, seed=1), out, tmp_path / "cache")
    rows = read(out)
    for row in rows:
        floor, ref = float(row["latency_floor_ms"]), float(row["ref_latency_ms"])
        assert row["latency_stat"] == "floor*ref" and row["ref_anchor_ms"] == "2.0"
        assert float(row["latency_ms"]) == pytest.approx(floor * 2.0 / ref, rel=1e-3)
        assert float(row["latency_scale"]) == pytest.approx(2.0 / ref, rel=1e-3)
        assert 0 < floor <= float(row["latency_median_ms"])
    # the first group has no reference to compare with: it is measured twice, the rest only if slow
    assert rows[0]["group_retries"] == "1" and {r["group_retries"] for r in rows[2:]} <= {"0", "1"}

    other_anchor = load_profile("tiny", root=profiles_dir, overrides={**FLOOR_REF, "timing": {
        **FLOOR_REF["timing"], "reference_ms": 3.0}})  # fmt: skip
    with pytest.raises(ValueError, match=r"reference anchors 2.0 ms \(the profile's: 3.0\)"):
        profile_subnets(other_anchor, supernet, [MNIST.smallest()], out, tmp_path / "cache")
    raw = load_profile("tiny", root=profiles_dir)
    with pytest.raises(ValueError, match=r"holds latencies of floor\*ref, not what the profile writes \(median\)"):
        profile_subnets(raw, supernet, [MNIST.smallest()], out, tmp_path / "cache")


def test_a_group_is_measured_again_while_its_reference_runs_slow(profiles_dir):
    """The reference's rounds follow a script (a stand-in for the machine's slow spells): 2.0 ms,
    then 1.5, then 1.0 against a fastest-so-far of 1.0. Each retry keeps the session whose
    reference ran fastest, and the sub-network's figure comes from that same session."""
    from predictors.groups import measure_group
    from predictors.measure.runner import Runner
    from predictors.measure.torch_cpu import TorchCpuBackend

    class Scripted(Runner):
        def __init__(self, rounds):
            super().__init__(lambda: None)
            self.rounds = iter(rounds)

        def time_calls(self, iterations):
            return list(next(self.rounds))

    profile = load_profile("tiny", root=profiles_dir, overrides={"noise": {"group_retries": 2, "drift_warn": 0.05}})

    def runners():
        net = Scripted([[5.0], [5.0], [4.0], [4.0], [3.0], [3.0]])
        ref = Scripted([[2.0], [2.0], [1.5], [1.5], [1.0], [1.0]])
        return {"net": net, "ref": ref}

    with TorchCpuBackend(threads=1) as backend:
        best, retries = measure_group(profile, backend, None, runners(), "ref", fastest_ref=1.0)
        assert retries == 2 and best["ref"].latency_ms == 1.0 and best["net"].latency_ms == 3.0
        best, retries = measure_group(profile, backend, None, runners(), "ref", fastest_ref=2.0)
        assert retries == 0 and best["ref"].latency_ms == 2.0 and best["net"].latency_ms == 5.0


def test_without_a_fixed_anchor_later_runs_use_the_tables(profiles_dir, supernet, tmp_path):
    """reference_ms: null anchors a table to its first group's reference; ofa-search's checks
    then measure in that table's units (`with_table_anchor`), not in their own first group's."""
    from predictors.profiling import with_table_anchor

    floating = {**FLOOR_REF, "timing": {**FLOOR_REF["timing"], "reference_ms": None}}
    profile = load_profile("tiny", root=profiles_dir, overrides=floating)
    out = tmp_path / "m.csv"
    profile_subnets(profile, supernet, sample_spread(MNIST, 3, seed=2), out, tmp_path / "cache")
    rows = read(out)
    assert {r["ref_anchor_ms"] for r in rows} == {rows[0]["ref_latency_ms"]}  # the first group's reference
    pinned = with_table_anchor(profile, out)
    assert pinned.timing.reference_ms == float(rows[0]["ref_anchor_ms"]) and pinned.timing.statistic == "floor"
    assert with_table_anchor(profile, tmp_path / "none.csv") is profile
    raw = load_profile("tiny", root=profiles_dir)
    assert with_table_anchor(raw, out) is raw
