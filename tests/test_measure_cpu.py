"""The two CPU backends on real exported sub-networks of the MNIST space.

Timing assertions are orderings only: the largest sub-network has 9x the MACs of the smallest,
both are measured in the same interleaved rounds (a slow spell of this shared machine hits
both alike), and the medians across rounds are compared. No wall-clock threshold.
"""

from __future__ import annotations

import pytest
import torch

from ofa.export import export_onnx
from ofa.networks import OFAMobileNetV3
from ofa.space import SPACES
from predictors.measure.ort_cpu import OnnxRuntimeCpuBackend
from predictors.measure.session import TimingPlan, measure_models, time_runners
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
    for m in (small, large):
        s = m.latency
        assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms and s.n_rounds >= FAST.rounds and s.iqr_ms >= 0
        assert m.backend == backend_cls.name and m.precision == "fp32" and m.threads == 1
        assert m.iterations_per_round >= 1 and m.host and m.hardware
        assert "torch" in m.versions and "python" in m.versions
        row = m.to_row()
        assert row["latency_ms"] == round(s.median_ms, 5) and row["power_w"] == ""
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


def test_noisy_runner_is_remeasured_and_steadier_session_kept():
    """A runner whose rounds vary wildly is measured again; a steady one is not."""
    from predictors.measure.runner import Runner

    class Scripted(Runner):
        """Round values follow a script (a stand-in for the machine's noise, not for hardware)."""

        def __init__(self, values):
            super().__init__(lambda: None)
            self.values = iter(values)

        def time_round(self, iterations):
            return next(self.values)

    plan = TimingPlan(warmup=0, rounds=4, iterations_per_round=1, min_round_ms=None, cv_threshold=0.05)
    steady = Scripted([1.0, 1.01, 0.99, 1.0])
    noisy = Scripted([1.0, 3.0, 1.0, 3.0] + [2.0, 2.02, 1.98, 2.0])
    out = time_runners({"steady": steady, "noisy": noisy}, plan)
    assert out["steady"].remeasured == 0 and out["noisy"].remeasured == 1
    assert out["noisy"].stats.median_ms == pytest.approx(2.0) and out["noisy"].stats.cv < 0.05
