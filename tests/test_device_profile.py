from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from app.shell import CONF_DIR
from predictors.measure.profile import HW_PROFILES_DIR, ProfileError, load_profile
from tests.conftest import REPO_ROOT

SHIPPED = ["cpu-ort", "cpu-torch", "gpu-trt-fp16", "gpu-cuda-fp32", "jetson-orin-trt-fp16"]


def test_every_shipped_profile_is_valid_and_holds_no_measurement():
    names = sorted(p.parent.name for p in HW_PROFILES_DIR.glob("*/profile.yaml"))
    assert set(SHIPPED) <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.hardware and profile.budgets.latency_ms
        assert profile.precision in ("fp32", "fp16", "int8")
        assert profile.timing_plan().rounds == profile.timing.rounds
    for name in ("gpu-trt-fp16", "gpu-cuda-fp32", "jetson-orin-trt-fp16"):
        assert not (HW_PROFILES_DIR / name / "measurements.csv").exists()  # nothing invented
    gpu = load_profile("gpu-trt-fp16")
    assert gpu.backend == "tensorrt" and gpu.precision == "fp16" and gpu.power.sampler == "nvml"
    cpu = load_profile("cpu-ort")
    assert cpu.backend == "onnxruntime-cpu" and cpu.supernet == "mnist" and len(cpu.budgets.latency_ms) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"backend": "tpu"},
            "backend = 'tpu' is not allowed; allowed: onnxruntime-cpu, torch-cpu, torch-cuda, tensorrt",
        ),
        ({"precision": "fp16"}, "precision = 'fp16' is not supported by backend onnxruntime-cpu; allowed: fp32, int8"),
        (
            {"backend": "tensorrt", "precision": "int8"},
            "precision = 'int8' is not supported by backend tensorrt; allowed: fp32, fp16 (TensorRT int8 needs",
        ),
        ({"precision": "fp8"}, "precision = 'fp8' is not allowed; allowed: fp32, fp16, int8"),
        ({"batch_size": 1.5}, "batch_size = 1.5 is not allowed; allowed: an integer >= 1"),
        ({"threads": 0}, "threads = 0 is not allowed; allowed: null or an integer >= 1"),
        ({"hardware": " "}, "hardware = ' ': a non-empty text is required"),
        ({"supernet": "imagenet"}, "supernet = 'imagenet' is not a supernet config"),
        ({"speed": "fast"}, "unknown field(s) speed; allowed: hardware, supernet, backend"),
        ({"timing": {"round": 3}}, "unknown field(s) round in timing; allowed: warmup, warmup_s, rounds"),
        ({"timing": {"rounds": 0}}, "timing.rounds = 0 is not allowed; allowed: an integer >= 1"),
        ({"timing": {"iterations_per_round": 10}}, "timing needs exactly one of iterations_per_round"),
        ({"timing": {"min_round_ms": None}}, "timing needs exactly one of iterations_per_round"),
        ({"noise": {"cv_threshold": 0}}, "noise.cv_threshold = 0 must be a number > 0.0"),
        ({"power": {"sampler": "rapl"}}, "power.sampler = 'rapl' is not allowed; allowed: none, nvml"),
        ({"power": {"sampler": "nvml"}}, "power.sampler = 'nvml' reads an NVIDIA GPU, but backend onnxruntime-cpu"),
        ({"power": {"window_s": 0.5}}, "power.window_s = 0.5 must be a number >= 1.0"),
        ({"budgets": {"latency_ms": [2, -1]}}, "budgets.latency_ms = [2, -1] must be a list of positive numbers"),
        ({"budgets": {"latency_ms": []}}, "budgets has no budget; give at least one of latency_ms, power_w"),
        ({"budgets": {"energy_mj": [5]}}, "budgets.power_w / energy_mj need power measurements"),
        ({"timing": [1, 2]}, "timing must be a mapping"),
        ({"timing": {"clock": "tsc"}}, "timing.clock = 'tsc' is not allowed; allowed: wall, thread_cpu"),
        ({"threads": 2}, "timing.clock = 'thread_cpu' times the CPU work of the calling thread; it needs"),
        ({"timing": {"statistic": "mean"}}, "timing.statistic = 'mean' is not allowed; allowed: median, floor"),
        ({"timing": {"floor_quantile": 0.7}}, "timing.floor_quantile = 0.7 must be a number >= 0.0 and <= 0.5"),
        ({"timing": {"normalize": "first"}}, "timing.normalize = 'first' is not allowed; allowed: none, reference"),
        ({"timing": {"normalize": "none"}}, "timing.reference_ms = 0.3 anchors normalised latencies, but"),
        ({"noise": {"group_retries": -1}}, "noise.group_retries = -1 is not allowed; allowed: an integer >= 0"),
        ({"noise": {"min_calm_fraction": 2}}, "noise.min_calm_fraction = 2 must be a number >= 0.0 and <= 1.0"),
    ],
)
def test_bad_profile_fields_get_one_clear_line(overrides, message):
    with pytest.raises(ProfileError) as exc:
        load_profile("cpu-ort", overrides=overrides)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(HW_PROFILES_DIR / "cpu-ort" / "profile.yaml") + ": ")
    assert message in text, text


def test_unknown_device_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no device profile 'nope' .*; known: .*cpu-ort"):
        load_profile("nope")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "profile.yaml").write_text("backend: [onnxruntime-cpu\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile("broken", root=tmp_path)


def test_profile_accepts_a_path_and_overrides_merge_deeply(tmp_path):
    data = yaml.safe_load((HW_PROFILES_DIR / "cpu-ort" / "profile.yaml").read_text())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "profile.yaml").write_text(yaml.safe_dump(data))
    profile = load_profile(tmp_path / "mine" / "profile.yaml", overrides={"timing": {"rounds": 3}})
    assert profile.name == "mine" and profile.timing.rounds == 3
    assert profile.timing.min_round_ms == data["timing"]["min_round_ms"]  # the rest of the section kept
    assert profile.measurements_csv == tmp_path / "mine" / "measurements.csv"


def test_hydra_device_selection_and_overrides_reach_the_profile():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("profile", overrides=["device=gpu-trt-fp16", "+device_overrides.timing.rounds=3"])
    overrides = OmegaConf.to_container(cfg.device_overrides)
    profile = load_profile(cfg.device, overrides=overrides)
    assert profile.name == "gpu-trt-fp16" and profile.timing.rounds == 3 and profile.timing.warmup_s == 2.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["device=bad"], "precision = 'fp16' is not supported by backend onnxruntime-cpu; allowed: fp32, int8"),
        (
            ["device=good", "+device_overrides.timing.rounds=0"],
            "timing.rounds = 0 is not allowed; allowed: an integer >= 1",
        ),
        (["device=good", "mode=table"], "mode = 'table' is not allowed; allowed: subnets, lut"),
        (["device=good", "n_subnets=1"], "n_subnets = 1 is not allowed; allowed: an integer >= 2"),
    ],
)
def test_cli_reports_a_bad_profile_in_one_line(tmp_path, args, message):
    data = yaml.safe_load((HW_PROFILES_DIR / "cpu-ort" / "profile.yaml").read_text())
    for name, changes in (("good", {}), ("bad", {"precision": "fp16"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "profile.yaml").write_text(yaml.safe_dump({**data, **changes}))
    cmd = [sys.executable, "-m", "app.profile", *args, f"profiles_dir={tmp_path}"]
    cmd += [f"hydra.run.dir={tmp_path / 'run'}", f"output={tmp_path / 'm.csv'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert "Traceback" not in out.stdout + out.stderr
    assert not Path(tmp_path / "m.csv").exists()


def test_one_backend_registry_names_the_classes_precisions_and_gpu_need():
    import torch

    from predictors.measure.backends import BACKENDS, GPU_BACKENDS, backend_class, needs_gpu, runs_here
    from predictors.measure.ort_cpu import OnnxRuntimeCpuBackend
    from predictors.measure.torch_cpu import TorchCpuBackend

    assert list(BACKENDS) == ["onnxruntime-cpu", "torch-cpu", "torch-cuda", "tensorrt"]
    assert GPU_BACKENDS == ("torch-cuda", "tensorrt") and [n for n in BACKENDS if needs_gpu(n)] == list(GPU_BACKENDS)
    assert runs_here("onnxruntime-cpu") and runs_here("torch-cpu")
    assert runs_here("tensorrt") == torch.cuda.is_available()
    assert backend_class("onnxruntime-cpu") is OnnxRuntimeCpuBackend and backend_class("torch-cpu") is TorchCpuBackend
    with OnnxRuntimeCpuBackend(precision="int8") as ort_backend:
        assert ort_backend.precisions == ("fp32", "int8") and not ort_backend.uses_gpu
    with pytest.raises(ValueError, match="precision = 'fp16' is not supported by backend torch-cpu; allowed: fp32"):
        TorchCpuBackend(precision="fp16")
    with pytest.raises(ValueError, match="backend = 'tpu' is not allowed; allowed: onnxruntime-cpu, torch-cpu"):
        needs_gpu("tpu")
    # the profile's backend is made through the registry
    with load_profile("cpu-torch").make_backend() as backend:
        assert isinstance(backend, TorchCpuBackend)


def test_profile_defaults_are_the_dataclasses_and_the_timing_plans():
    from predictors.measure.profile import NoiseSettings, TimingSettings
    from predictors.measure.session import TimingPlan

    minimal = {"hardware": "x", "supernet": "mnist", "backend": "torch-cpu", "budgets": {"latency_ms": [1]}}
    profile = load_profile_data(minimal)
    assert profile.timing == TimingSettings() and profile.noise == NoiseSettings()
    plan = profile.timing_plan()
    default = TimingPlan()
    for name in ("warmup", "warmup_s", "rounds", "iterations_per_round", "min_round_ms", "cv_threshold",
                 "max_remeasure", "statistic", "floor_quantile", "min_calm_fraction"):  # fmt: skip
        assert getattr(plan, name) == getattr(default, name), name


def load_profile_data(data):
    from predictors.measure.profile import parse_profile

    return parse_profile(data, HW_PROFILES_DIR / "minimal" / "profile.yaml")
