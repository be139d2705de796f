"""GPU paths: NVML power/energy, torch-cuda and TensorRT.

Without the hardware, `pynvml`, `tensorrt` and `torch.cuda` are replaced by stand-ins at the
library boundary (tests/fakes.py) and our code runs for real above them; the tests marked
`gpu` run the real libraries and are skipped where they are missing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from ofa.space import SPACES
from predictors.measure.nvml import NvmlSampler
from predictors.measure.optional import MissingPackageError
from predictors.measure.runner import Runner
from predictors.measure.session import TimingPlan, measure_models
from predictors.measure.tensorrt import TensorRTBackend
from predictors.measure.torch_cuda import TorchCudaBackend
from tests.conftest import REPO_ROOT, calibrate_bn_, images, make_supernet
from tests.fakes import FakeClock, FakeEvent, FakeStream, fake_cuda, fake_pynvml, fake_tensorrt

STEP = 1 / 512  # seconds per fake inference: a binary fraction, so fake-clock sums are exact
FAST = TimingPlan(warmup=2, rounds=4, min_round_ms=10, iterations_per_round=None, max_remeasure=1)


@pytest.fixture(scope="module")
def supernet():
    """The MNIST supernet with its smallest and largest sub-networks extracted once each (BN
    statistics of their own, so that their outputs depend on the input)."""
    net = make_supernet(space=SPACES["ofa_mbv3_mnist"]).eval()
    net.extracted = {}
    for which in ("smallest", "largest"):
        arch = getattr(net.space, which)()
        net.set_active_subnet(arch)
        calibrate_bn_(net, torch.Generator().manual_seed(1))
        net.extracted[which] = (arch, net.extract_subnet(arch).eval(), (1, 1, arch.r, arch.r))
    return net


def subnet(supernet, which: str):
    return supernet.extracted[which]


def clocked_runner(clock: FakeClock) -> Runner:
    return Runner(lambda: clock.advance(STEP))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- NVML --------------------------------------------------------------------------------------------
def test_nvml_energy_counter_difference_over_the_window(monkeypatch):
    clock = FakeClock()
    nvml = fake_pynvml(clock, watts=50.0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    sampler = NvmlSampler(0, window_s=1.0, clock=clock)
    reading = sampler.measure(clocked_runner(clock))
    assert reading.method == "energy-counter"
    assert reading.inferences == 512 and reading.window_s == pytest.approx(1.0)  # back to back for >= 1 s
    assert reading.power_w == pytest.approx(50.0, rel=1e-4)  # W, from mJ / ms
    assert reading.energy_mj == pytest.approx(50.0 * STEP * 1e3, rel=1e-4)  # mJ per inference
    assert nvml.calls["power"] >= int(reading.window_s / (0.02 + STEP))  # polled too, in case the counter fails
    assert sampler.versions()["nvidia-driver"] == "999.1" and sampler.gpu_name == "Fake GPU"
    sampler.close()
    assert nvml.calls["shutdown"] == 1


def test_nvml_counter_integrates_a_changing_power(monkeypatch):
    clock = FakeClock()
    start = clock()
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(clock, watts=lambda t: 40.0 if t - start < 1.0 else 80.0))
    reading = NvmlSampler(0, window_s=2.0, clock=clock).measure(clocked_runner(clock))
    assert reading.method == "energy-counter" and reading.inferences == 1024
    assert reading.power_w == pytest.approx(60.0, rel=1e-3)
    assert reading.energy_mj == pytest.approx(60.0 * STEP * 1e3, rel=1e-3)


@pytest.mark.parametrize("counter", ["unsupported", "stuck"])
def test_nvml_falls_back_to_power_polling(monkeypatch, counter):
    clock = FakeClock()
    start = clock()
    nvml = fake_pynvml(clock, watts=lambda t: 30.0 if t - start < 0.5 else 70.0, energy_counter=counter)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    sampler = NvmlSampler(0, window_s=1.0, poll_interval_s=0.01, clock=clock)
    assert sampler.has_energy_counter is (counter == "stuck")
    reading = sampler.measure(clocked_runner(clock))
    assert reading.method == "power-polling" and reading.inferences == 512
    assert nvml.calls["power"] >= int(1.0 / (0.01 + STEP))  # polled through the whole window, every 10 ms
    assert reading.power_w == pytest.approx(50.0, abs=1.0)  # mean of the polled mW, in W
    assert reading.energy_mj == pytest.approx(reading.power_w * reading.window_s * 1e3 / 512)


def test_nvml_window_must_be_at_least_one_second(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(FakeClock()))
    with pytest.raises(ValueError, match="window_s = 0.5 is too short; it must be at least 1.0 s"):
        NvmlSampler(0, window_s=0.5)


def test_missing_pynvml_or_driver_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    with pytest.raises(MissingPackageError) as exc:
        NvmlSampler(0)
    assert "power sampler nvml needs the Python package nvidia-ml-py" in one_line(exc)
    assert "pip install -e '.[gpu]'" in str(exc.value)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(FakeClock(), init_error=12))
    with pytest.raises(MissingPackageError) as exc:
        NvmlSampler(0)
    assert "cannot reach GPU 0 through NVML (NVML Shared Library Not Found)" in one_line(exc)


# --- torch-cuda --------------------------------------------------------------------------------------
def test_torch_cuda_times_with_events_and_orders_sizes(monkeypatch, supernet):
    fake_cuda(monkeypatch)
    models = {}
    for which in ("smallest", "largest"):
        arch, model, shape = subnet(supernet, which)
        models[arch.key()] = (model, shape)
    before = torch.backends.cudnn.benchmark
    with TorchCudaBackend(precision="fp32", device="cpu") as backend:  # the fake GPU is this CPU
        assert torch.backends.cudnn.benchmark is True
        small, large = measure_models(backend, models, FAST).values()
    assert torch.backends.cudnn.benchmark is before
    assert large.latency.median_ms > small.latency.median_ms
    assert small.backend == "torch-cuda" and small.hardware == "Fake GPU" and "cuda" in small.versions
    assert len(FakeEvent.recorded_streams) >= 2 * 2 * FAST.rounds  # a start and an end event per round


def test_torch_cuda_without_cuda_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MissingPackageError) as exc:
        TorchCudaBackend()
    assert "backend torch-cuda needs an NVIDIA GPU and a CUDA build of torch" in one_line(exc)


# --- TensorRT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["10.13.0", "11.4.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_is_built_once_cached_and_computes_the_subnet(
    monkeypatch, tmp_path, supernet, version, precision
):
    fake_cuda(monkeypatch)
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    arch, model, shape = subnet(supernet, "smallest")
    key = f"{supernet.space.fingerprint()}|{arch.key()}"
    x = images(1, 1, arch.r, torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    kwargs = dict(precision=precision, workdir=tmp_path, device="cpu", onnx_exporter="torchscript")
    with TensorRTBackend(**kwargs) as backend:
        runner = backend.prepare(model, shape, key)
        got = runner.infer(x)
        again = backend.prepare(model, shape, key)
        assert backend.engines_built == 1 and again.infer(x).shape == got.shape
    assert got.dtype == (torch.float16 if precision == "fp16" else torch.float32)
    tol = 2e-2 * expected.abs().max().item() if precision == "fp16" else 1e-4
    assert (got.float() - expected).abs().max().item() <= tol
    assert (expected[0] - expected[0].mean()).abs().max() > 1e-3  # a non-trivial output was compared

    # Strongly typed network, precision from the graph, never from builder flags (gone in 11.x).
    assert trt.log["builds"] == 1
    assert trt.log["network_flags"] == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    fp16_graph = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    assert trt.log["parsed_input_types"] == [fp16_graph]
    assert not any(f.name in ("FP16", "INT8", "BF16") for f in trt.log["config_flags"][0])
    assert set(trt.log["streams"]) == {FakeStream().cuda_stream}  # execute_async_v3 on the backend's stream

    (engine_file,) = (tmp_path / "engines").glob("*.engine")
    sidecar = json.loads(engine_file.with_suffix(".json").read_text())
    assert sidecar == {
        "key": key,
        "precision": precision,
        "input_shape": list(shape),
        "tensorrt": version,
        "gpu": "Fake GPU",
    }
    with TensorRTBackend(**kwargs) as later:  # a later run (new process) loads the cached engine
        later.prepare(model, shape, key)
        assert later.engines_built == 0
    assert trt.log["builds"] == 1


def test_tensorrt_cache_is_keyed_by_version_and_rebuilds_a_stale_engine(monkeypatch, tmp_path, supernet):
    fake_cuda(monkeypatch)
    arch, model, shape = subnet(supernet, "smallest")
    kwargs = dict(precision="fp16", workdir=tmp_path, device="cpu", onnx_exporter="torchscript")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.13.0"))
    with TensorRTBackend(**kwargs) as b10:
        b10.prepare(model, shape, arch.key())
        path10 = b10.engine_path(arch.key(), shape)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0"))
    with TensorRTBackend(**kwargs) as b11:
        b11.prepare(model, shape, arch.key())
        path11 = b11.engine_path(arch.key(), shape)
        assert b11.engines_built == 1 and path11 != path10
        path11.write_bytes(b"an engine of some other build")
        b11.prepare(model, shape, arch.key())
        assert b11.engines_built == 2  # the stale file was rebuilt
    assert sorted(p.name for p in (tmp_path / "engines").glob("*.engine")) == sorted([path10.name, path11.name])


def test_tensorrt_times_with_events_and_orders_sizes(monkeypatch, tmp_path, supernet):
    fake_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0"))
    models = {}
    for which in ("smallest", "largest"):
        arch, model, shape = subnet(supernet, which)
        models[arch.key()] = (model, shape)
    with TensorRTBackend(precision="fp32", workdir=tmp_path, device="cpu", onnx_exporter="torchscript") as backend:
        small, large = measure_models(backend, models, FAST).values()
    assert large.latency.median_ms > small.latency.median_ms
    assert small.versions["tensorrt"] == "11.4.0" and small.backend == "tensorrt"


def test_tensorrt_refuses_an_fp32_graph_for_fp16(monkeypatch, tmp_path, supernet):
    from ofa.export import export_onnx

    fake_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0"))
    arch, model, shape = subnet(supernet, "smallest")
    path = export_onnx(model, shape, tmp_path / "fp32.onnx", exporter="torchscript")
    with (
        TensorRTBackend(precision="fp16", workdir=tmp_path, device="cpu") as backend,
        pytest.raises(ValueError, match="is not an FP16 graph; TensorRT builds fp16 engines from FP16 graphs"),
    ):
        backend.prepare(path, shape, "k")


def test_missing_tensorrt_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingPackageError) as exc:
        TensorRTBackend(precision="fp16")
    text = one_line(exc)
    assert "backend tensorrt needs the Python package tensorrt" in text and "pip install -e '.[gpu]'" in text


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_ofa_profile_without_tensorrt_prints_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "app.profile",
        "device=gpu-trt-fp16",
        "n_subnets=2",
        f"output={tmp_path / 'm.csv'}",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: MissingPackageError: backend tensorrt needs the Python package tensorrt")
    assert line.endswith("install it with: pip install -e '.[gpu]'")
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "m.csv").exists()


# --- the real hardware, where present ---------------------------------------------------------------
def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt is not installed")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_engine_matches_torch_and_orders_sizes(tmp_path, supernet, precision):
    arch, model, shape = subnet(supernet, "smallest")
    x = images(1, 1, arch.r, torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    with TensorRTBackend(precision=precision, workdir=tmp_path) as backend:
        got = backend.prepare(model, shape, arch.key()).infer(x)
        tol = 3e-2 if precision == "fp16" else 1e-3
        assert np.abs(got.float().numpy() - expected.numpy()).max() <= tol * expected.abs().max().item()
        models = {}
        for which in ("smallest", "largest"):
            a, m, s = subnet(supernet, which)
            models[a.key()] = (m, s)
        small, large = measure_models(backend, models, FAST).values()
    assert large.latency.median_ms > small.latency.median_ms


@pytest.mark.gpu
@needs_gpu
@pytest.mark.skipif(not _nvml_works(), reason="NVML (nvidia-ml-py and a driver) not available")
def test_real_nvml_reads_power_and_energy(supernet):
    _, model, shape = subnet(supernet, "largest")
    with TorchCudaBackend(precision="fp16") as backend:
        runner = backend.prepare(model, shape, "largest")
        sampler = NvmlSampler(0, window_s=1.0)
        try:
            reading = sampler.measure(runner)
        finally:
            sampler.close()
    assert reading.window_s >= 1.0 and reading.inferences > 0
    assert 1.0 < reading.power_w < 2000.0 and reading.energy_mj > 0
