"""The two CPU backends on real exported sub-networks of the MNIST space.

Timing assertions are orderings only: the largest sub-network has 9x the MACs of the smallest,
both are measured in the same interleaved rounds (a slow spell of this shared machine hits
both alike), and the medians across rounds are compared. No wall-clock threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ofa.export import export_onnx
from ofa.networks import OFAMobileNetV3
from ofa.space import SPACES
from predictors.measure.ort_cpu import OnnxRuntimeCpuBackend
from predictors.measure.session import TimingPlan, measure_models, time_runners
from predictors.measure.timing import TimingStats
from predictors.measure.torch_cpu import TorchCpuBackend

FAST = TimingPlan(warmup=3, rounds=5, min_round_ms=15, iterations_per_round=None, max_remeasure=1)


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return OFAMobileNetV3(space=SPACES["ofa_mbv3_mnist"]).eval()


def small_and_large(supernet):
    space = supernet.space
    return {
        f"{space.fingerprint()}|{arch.key()}": (supernet.extract_subnet(arch).eval(), (1, 1, arch.r, arch.r))
        for arch in (space.smallest(), space.largest())
    }


@pytest.mark.parametrize("backend_cls", [OnnxRuntimeCpuBackend, TorchCpuBackend], ids=["onnxruntime", "torch"])
def test_cpu_backend_orders_smallest_before_largest(supernet, tmp_path, backend_cls):
    models = small_and_large(supernet)
    with backend_cls(threads=1, workdir=tmp_path, onnx_exporter="torchscript", keep_exports=True) as backend:
        result = measure_models(backend, models, FAST)
    small, large = (result[k] for k in models)
    assert large.latency.median_ms > small.latency.median_ms
    assert large.latency.floor_ms > small.latency.floor_ms
    for m in (small, large):
        s = m.latency
        assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms and s.n_rounds >= FAST.rounds and s.iqr_ms >= 0
        assert 0 < s.floor_ms <= s.median_ms and s.n_calls == s.n_rounds * m.iterations_per_round
        assert m.backend == backend_cls.name and m.precision == "fp32" and m.threads == 1
        assert m.iterations_per_round >= 1 and m.host and m.hardware
        assert "torch" in m.versions and "python" in m.versions
        row = m.to_row()
        assert row["latency_ms"] == round(s.median_ms, 5) and row["power_w"] == ""
        assert row["latency_stat"] == "median" and row["latency_floor_ms"] == round(s.floor_ms, 5)
    if backend_cls is OnnxRuntimeCpuBackend:
        assert "onnxruntime" in small.versions
        assert len(list(tmp_path.glob("*.onnx"))) == 2  # one export per sub-network, cached by key


def test_onnxruntime_measures_an_onnx_file_and_int8(supernet, tmp_path):
    arch = supernet.space.smallest()
    path = export_onnx(
        supernet.extract_subnet(arch), (1, 1, arch.r, arch.r), tmp_path / "s.onnx", exporter="torchscript"
    )
    plan = TimingPlan(warmup=1, rounds=2, iterations_per_round=2, min_round_ms=None, max_remeasure=0)
    with OnnxRuntimeCpuBackend(threads=1, workdir=tmp_path / "w") as fp32:
        (m,) = measure_models(fp32, {"file": (path, (1, 1, arch.r, arch.r))}, plan).values()
    assert m.latency.n_rounds == 2 and m.iterations_per_round == 2
    with OnnxRuntimeCpuBackend(precision="int8", threads=1, workdir=tmp_path / "w", keep_exports=True) as int8:
        (q,) = measure_models(int8, {"file": (path, (1, 1, arch.r, arch.r))}, plan).values()
    assert q.precision == "int8" and q.latency.median_ms > 0
    import onnx

    (quantized,) = (tmp_path / "w").glob("*.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert path.is_file()  # the caller's ONNX file is never removed


def test_onnxruntime_removes_its_exports_once_loaded(supernet, tmp_path):
    arch = supernet.space.smallest()
    with OnnxRuntimeCpuBackend(threads=1, workdir=tmp_path, onnx_exporter="torchscript") as backend:
        runner = backend.prepare(supernet.extract_subnet(arch), (1, 1, arch.r, arch.r), arch.key())
        runner.run()
    assert list(tmp_path.iterdir()) == []


def test_backends_refuse_what_they_cannot_measure(supernet, tmp_path):
    with pytest.raises(ValueError, match="precision = 'fp16' is not supported by backend onnxruntime-cpu"):
        OnnxRuntimeCpuBackend(precision="fp16")
    with TorchCpuBackend() as backend, pytest.raises(ValueError, match="backend torch-cpu measures torch modules"):
        backend.prepare(tmp_path / "net.onnx", (1, 1, 20, 20), "k")
    with OnnxRuntimeCpuBackend(workdir=tmp_path) as backend, pytest.raises(FileNotFoundError, match="not found"):
        backend.prepare(tmp_path / "missing.onnx", (1, 1, 20, 20), "k")


def test_thread_cpu_clock_counts_only_this_threads_work(tmp_path):
    """A sleeping call takes wall time but no CPU time: what another job taking the core does."""
    import time

    from predictors.measure.runner import Runner

    wall = Runner(lambda: time.sleep(0.01)).time_round(3)
    cpu = Runner(lambda: time.sleep(0.01), clock="thread_cpu").time_round(3)
    assert wall >= 10.0 and cpu < wall / 2
    with pytest.raises(ValueError, match="clock = 'thread_cpu' times the CPU work of the calling thread"):
        OnnxRuntimeCpuBackend(threads=2, clock="thread_cpu")
    with OnnxRuntimeCpuBackend(threads=1, clock="thread_cpu", workdir=tmp_path) as backend:
        assert backend.clock == "thread_cpu"


def test_torch_cpu_backend_restores_the_thread_count():
    before = torch.get_num_threads()
    with TorchCpuBackend(threads=before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


class Scripted:
    """A runner whose rounds follow a script of call times (a stand-in for the machine's noise,
    not for hardware): each `time_calls` returns the next round's list."""

    def __init__(self, rounds):
        from predictors.measure.runner import Runner

        self.runner = Runner(lambda: None)
        self.rounds = iter(rounds)

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def time_calls(self, iterations):
        return list(next(self.rounds))


def test_noisy_runner_is_remeasured_and_steadier_session_kept():
    """A runner whose rounds vary wildly is measured again; a steady one is not."""
    plan = TimingPlan(warmup=0, rounds=4, iterations_per_round=1, min_round_ms=None, cv_threshold=0.05)
    steady = Scripted([[1.0], [1.01], [0.99], [1.0]])
    noisy = Scripted([[1.0], [3.0], [1.0], [3.0]] + [[2.0], [2.02], [1.98], [2.0]])
    out = time_runners({"steady": steady, "noisy": noisy}, plan)
    assert out["steady"].remeasured == 0 and out["noisy"].remeasured == 1
    assert out["noisy"].stats.median_ms == pytest.approx(2.0) and out["noisy"].stats.cv < 0.05


def test_floor_is_a_low_quantile_of_the_pooled_calls():
    """Rounds hold several calls each; the floor pools them, the median summarises round medians."""
    rounds = [[1.0, 1.1, 1.2], [1.5, 1.6, 1.7], [0.9, 1.3, 1.4]]
    stats = TimingStats.from_rounds([float(np.median(r)) for r in rounds], sum(rounds, []), floor_quantile=0.1)
    assert stats.floor_ms == pytest.approx(np.quantile(sum(rounds, []), 0.1))
    assert stats.median_ms == pytest.approx(1.3) and stats.n_calls == 9 and stats.n_rounds == 3
    assert stats.value_ms("floor") == stats.floor_ms and stats.value_ms("median") == stats.median_ms
    with pytest.raises(ValueError, match="statistic = 'mean' is not allowed; allowed: median, floor"):
        stats.value_ms("mean")


def test_floor_remeasures_a_runner_with_few_calm_rounds_and_pools_the_rounds():
    """With `statistic: floor`, a runner that spent most rounds in slow spells is measured again and
    its new rounds join the old ones; one that ran near its floor most of the time is left alone."""
    plan = TimingPlan(
        warmup=0, rounds=4, iterations_per_round=2, min_round_ms=None, cv_threshold=0.05,
        statistic="floor", floor_quantile=0.0, min_calm_fraction=0.5,
    )  # fmt: skip
    calm = Scripted([[1.0, 1.0], [1.02, 1.0], [1.5, 1.5], [1.0, 1.01]])
    slow_session = [[1.0, 1.0], [1.5, 1.6], [1.5, 1.5], [1.4, 1.5]]
    spells = Scripted(slow_session + [[1.0, 1.01], [1.0, 1.0], [1.6, 1.6], [1.0, 1.0]])
    out = time_runners({"calm": calm, "spells": spells}, plan)
    assert out["calm"].remeasured == 0 and out["calm"].stats.n_rounds == 4
    assert out["spells"].remeasured == 1 and out["spells"].stats.n_rounds == 8 and out["spells"].stats.n_calls == 16
    assert out["spells"].stats.floor_ms == 1.0 and out["spells"].calm_fraction(0.05) == 0.5
    assert out["spells"].stats.median_ms > 1.0  # the median still sees the spells
