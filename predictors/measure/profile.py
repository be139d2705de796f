"""Device profiles: `hw_profiles/<name>/profile.yaml`, validated with one-line errors.

A profile says how to measure on one device (backend, precision, batch, threads, timing and
noise control, power sampler, GPU index), which supernet it profiles (`conf/supernet/<name>`),
the device's default budgets for `ofa-search`, and a free-text description of the hardware.
Its folder also holds what `ofa-profile` measures there (`measurements.csv`, `lut.csv`).

    timing:  warmup, warmup_s, rounds, iterations_per_round | min_round_ms (exactly one),
             clock (wall | thread_cpu: CPU time of the calling thread, CPU backends, 1 thread),
             statistic (median | floor: the floor_quantile of all calls pooled across rounds),
             normalize (none | reference: latency_ms = the sub-network's time / the reference's,
             timed in the same rounds, x reference_ms, or x the file's first reference if null)
    noise:   cv_threshold, max_remeasure, group_size (sub-networks per interleaved group,
             each group also re-measures the reference sub-network), drift_warn,
             min_calm_fraction (floor: re-measure when fewer rounds ran near the floor),
             group_retries (measure a group again while its reference runs > drift_warn
             slower than the fastest reference so far)
    power:   sampler (none | nvml), window_s (>= 1), poll_interval_s
    budgets: latency_ms, power_w, energy_mj (lists; at least one budget in all)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ofa.paths import CONF_DIR, REPO_ROOT
from predictors.measure.backend import Backend
from predictors.measure.session import TimingPlan
from predictors.measure.timing import DEFAULT_FLOOR_QUANTILE, STATISTICS

HW_PROFILES_DIR = REPO_ROOT / "hw_profiles"
PROFILE_FILE = "profile.yaml"

# backend -> precisions it supports
BACKENDS: dict[str, tuple[str, ...]] = {
    "onnxruntime-cpu": ("fp32", "int8"),
    "torch-cpu": ("fp32",),
    "torch-cuda": ("fp32", "fp16"),
    "tensorrt": ("fp32", "fp16"),
}
GPU_BACKENDS = ("torch-cuda", "tensorrt")
SAMPLERS = ("none", "nvml")
EXPORTERS = ("dynamo", "torchscript")
CLOCKS = ("wall", "thread_cpu")
NORMALIZE = ("none", "reference")
PRECISION_NOTES = {
    ("tensorrt", "int8"): "TensorRT int8 needs an explicitly quantised (Q/DQ) graph, which ofa-profile does not make",
    ("torch-cuda", "int8"): "torch has no int8 GPU path for these convolutions",
    ("onnxruntime-cpu", "fp16"): "ONNX Runtime's CPU provider has no fast fp16 convolutions",
    ("torch-cpu", "fp16"): "torch's CPU fp16 convolutions are emulated and slower than fp32",
    ("torch-cpu", "int8"): "use onnxruntime-cpu for int8 on the CPU",
}


class ProfileError(ValueError):
    """A bad profile.yaml: the message names the file, the field, the value and what is allowed."""


@dataclass(frozen=True)
class TimingSettings:
    warmup: int = 10
    warmup_s: float = 0.0
    rounds: int = 7
    iterations_per_round: int | None = None
    min_round_ms: float | None = 50.0
    clock: str = "wall"
    statistic: str = "median"
    floor_quantile: float = DEFAULT_FLOOR_QUANTILE
    normalize: str = "none"
    reference_ms: float | None = None


@dataclass(frozen=True)
class NoiseSettings:
    cv_threshold: float = 0.05
    max_remeasure: int = 2
    group_size: int = 8
    drift_warn: float = 0.05
    min_calm_fraction: float = 0.25
    group_retries: int = 0


@dataclass(frozen=True)
class PowerSettings:
    sampler: str = "none"
    window_s: float = 2.0
    poll_interval_s: float = 0.02


@dataclass(frozen=True)
class Budgets:
    latency_ms: tuple[float, ...] = ()
    power_w: tuple[float, ...] = ()
    energy_mj: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, list[float]]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    hardware: str
    supernet: str
    backend: str
    precision: str
    batch_size: int
    threads: int | None
    gpu_index: int
    onnx_exporter: str
    timing: TimingSettings
    noise: NoiseSettings
    power: PowerSettings
    budgets: Budgets
    directory: Path

    # --- what the profile builds ---------------------------------------------------------------
    def timing_plan(self) -> TimingPlan:
        t, n = self.timing, self.noise
        return TimingPlan(
            warmup=t.warmup,
            warmup_s=t.warmup_s,
            rounds=t.rounds,
            iterations_per_round=t.iterations_per_round,
            min_round_ms=t.min_round_ms,
            cv_threshold=n.cv_threshold,
            max_remeasure=n.max_remeasure,
            statistic=t.statistic,
            floor_quantile=t.floor_quantile,
            min_calm_fraction=n.min_calm_fraction,
        )

    def make_backend(self, workdir: str | os.PathLike | None = None, **kwargs: Any) -> Backend:
        """The profile's backend (missing GPU packages fail here, in one line)."""
        from predictors.measure.ort_cpu import OnnxRuntimeCpuBackend
        from predictors.measure.tensorrt import TensorRTBackend
        from predictors.measure.torch_cpu import TorchCpuBackend
        from predictors.measure.torch_cuda import TorchCudaBackend

        cls = {
            "onnxruntime-cpu": OnnxRuntimeCpuBackend,
            "torch-cpu": TorchCpuBackend,
            "torch-cuda": TorchCudaBackend,
            "tensorrt": TensorRTBackend,
        }[self.backend]
        return cls(
            precision=self.precision,
            batch_size=self.batch_size,
            threads=self.threads,
            gpu_index=self.gpu_index,
            workdir=workdir,
            **{"onnx_exporter": self.onnx_exporter, "clock": self.timing.clock, **kwargs},
        )

    def make_sampler(self, **kwargs: Any) -> Any:
        """An `NvmlSampler` for `power.sampler: nvml`, else None."""
        if self.power.sampler == "none":
            return None
        from predictors.measure.nvml import NvmlSampler

        return NvmlSampler(self.gpu_index, self.power.window_s, self.power.poll_interval_s, **kwargs)

    def supernet_config_path(self) -> Path:
        return CONF_DIR / "supernet" / f"{self.supernet}.yaml"

    @property
    def measurements_csv(self) -> Path:
        return self.directory / "measurements.csv"

    @property
    def lut_csv(self) -> Path:
        return self.directory / "lut.csv"

    @property
    def cache_dir(self) -> Path:
        return self.directory / "cache"


# --- loading and validation ----------------------------------------------------------------------
def profile_path(name_or_path: str | os.PathLike, root: str | os.PathLike = HW_PROFILES_DIR) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
        return path / PROFILE_FILE if path.is_dir() else path
    path = Path(root) / text / PROFILE_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{PROFILE_FILE}"))
        raise FileNotFoundError(f"no device profile {text!r} ({path} not found); known: {', '.join(known) or 'none'}")
    return path


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_profile(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike = HW_PROFILES_DIR,
    overrides: Mapping[str, Any] | None = None,
) -> DeviceProfile:
    """Read and validate a device profile by name (`hw_profiles/<name>/profile.yaml`) or path;
    `overrides` (nested dict, e.g. `{"timing": {"rounds": 3}}`) replace fields before checking."""
    path = profile_path(name_or_path, root)
    if not path.is_file():
        raise FileNotFoundError(f"device profile {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(f"{path}: a profile is a mapping of fields, got {type(data).__name__}")
    if overrides:
        data = deep_merge(data, overrides)
    return parse_profile(data, path)


def parse_profile(data: Mapping[str, Any], path: Path) -> DeviceProfile:
    where = str(path)

    def fail(message: str) -> ProfileError:
        return ProfileError(f"{where}: {message}")

    top = _Section(data, "", fail)
    top.check_keys(
        "hardware",
        "supernet",
        "backend",
        "precision",
        "batch_size",
        "threads",
        "gpu_index",
        "onnx_exporter",
        "timing",
        "noise",
        "power",
        "budgets",
    )
    hardware = top.text("hardware")
    backend = top.choice("backend", tuple(BACKENDS), required=True)
    precision = top.choice("precision", ("fp32", "fp16", "int8"), default="fp32")
    if precision not in BACKENDS[backend]:
        note = PRECISION_NOTES.get((backend, precision), "")
        raise fail(
            f"precision = {precision!r} is not supported by backend {backend}; allowed: "
            f"{', '.join(BACKENDS[backend])}" + (f" ({note})" if note else "")
        )
    supernet = top.text("supernet")
    supernet_file = CONF_DIR / "supernet" / f"{supernet}.yaml"
    if not supernet_file.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "supernet").glob("*.yaml"))
        raise fail(f"supernet = {supernet!r} has no config {supernet_file}; known: {', '.join(known)}")

    timing_s = top.section("timing")
    timing_s.check_keys(*(f.name for f in fields(TimingSettings)))
    timing = TimingSettings(
        warmup=timing_s.integer("warmup", 10, minimum=0),
        warmup_s=timing_s.number("warmup_s", 0.0, minimum=0.0),
        rounds=timing_s.integer("rounds", 7, minimum=1),
        iterations_per_round=timing_s.integer("iterations_per_round", None, minimum=1, nullable=True),
        min_round_ms=timing_s.number("min_round_ms", 50.0, minimum=0.0, nullable=True, exclusive=True),
        clock=timing_s.choice("clock", CLOCKS, default="wall"),
        statistic=timing_s.choice("statistic", STATISTICS, default="median"),
        floor_quantile=timing_s.number("floor_quantile", DEFAULT_FLOOR_QUANTILE, minimum=0.0, maximum=0.5),
        normalize=timing_s.choice("normalize", NORMALIZE, default="none"),
        reference_ms=timing_s.number("reference_ms", None, minimum=0.0, nullable=True, exclusive=True),
    )
    if timing.reference_ms is not None and timing.normalize == "none":
        raise fail(
            f"timing.reference_ms = {timing.reference_ms} anchors normalised latencies, but timing.normalize is "
            "none; set normalize: reference, or remove reference_ms"
        )
    if (timing.iterations_per_round is None) == (timing.min_round_ms is None):
        raise fail(
            "timing needs exactly one of iterations_per_round (a fixed count) and min_round_ms "
            f"(a minimum measured time per round); got iterations_per_round = {timing.iterations_per_round}, "
            f"min_round_ms = {timing.min_round_ms}"
        )

    threads = top.integer("threads", None, minimum=1, nullable=True)
    if timing.clock == "thread_cpu" and (backend in GPU_BACKENDS or threads != 1):
        raise fail(
            f"timing.clock = 'thread_cpu' times the CPU work of the calling thread; it needs a CPU backend and "
            f"threads: 1 (backend {backend}, threads {threads}); use clock: wall"
        )

    noise_s = top.section("noise")
    noise_s.check_keys(*(f.name for f in fields(NoiseSettings)))
    noise = NoiseSettings(
        cv_threshold=noise_s.number("cv_threshold", 0.05, minimum=0.0, exclusive=True),
        max_remeasure=noise_s.integer("max_remeasure", 2, minimum=0),
        group_size=noise_s.integer("group_size", 8, minimum=1),
        drift_warn=noise_s.number("drift_warn", 0.05, minimum=0.0, exclusive=True),
        min_calm_fraction=noise_s.number("min_calm_fraction", 0.25, minimum=0.0, maximum=1.0),
        group_retries=noise_s.integer("group_retries", 0, minimum=0),
    )

    power_s = top.section("power")
    power_s.check_keys(*(f.name for f in fields(PowerSettings)))
    power = PowerSettings(
        sampler=power_s.choice("sampler", SAMPLERS, default="none"),
        window_s=power_s.number("window_s", 2.0, minimum=1.0),
        poll_interval_s=power_s.number("poll_interval_s", 0.02, minimum=0.0, exclusive=True),
    )
    if power.sampler == "nvml" and backend not in GPU_BACKENDS:
        raise fail(
            f"power.sampler = 'nvml' reads an NVIDIA GPU, but backend {backend} runs on the CPU; "
            f"use sampler none, or a GPU backend ({', '.join(GPU_BACKENDS)})"
        )

    budgets_s = top.section("budgets")
    budgets_s.check_keys(*(f.name for f in fields(Budgets)))
    budgets = Budgets(**{f.name: budgets_s.positive_list(f.name) for f in fields(Budgets)})
    if not any(getattr(budgets, f.name) for f in fields(Budgets)):
        raise fail("budgets has no budget; give at least one of latency_ms, power_w, energy_mj (lists)")
    if (budgets.power_w or budgets.energy_mj) and power.sampler == "none":
        raise fail("budgets.power_w / energy_mj need power measurements, but power.sampler is none")

    return DeviceProfile(
        name=path.parent.name,
        hardware=hardware,
        supernet=supernet,
        backend=backend,
        precision=precision,
        batch_size=top.integer("batch_size", 1, minimum=1),
        threads=threads,
        gpu_index=top.integer("gpu_index", 0, minimum=0),
        onnx_exporter=top.choice("onnx_exporter", EXPORTERS, default="dynamo"),
        timing=timing,
        noise=noise,
        power=power,
        budgets=budgets,
        directory=path.parent,
    )


class _Section:
    """Typed access to one mapping of the profile, with errors naming the dotted field."""

    def __init__(self, data: Any, prefix: str, fail: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise fail(f"{prefix.rstrip('.')} must be a mapping, got {data!r}")
        self.data, self.prefix, self.fail = data, prefix, fail

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def check_keys(self, *allowed: str) -> None:
        unknown = sorted(str(k) for k in self.data if k not in allowed)
        if unknown:
            where = f" in {self.prefix.rstrip('.')}" if self.prefix else ""
            raise self.fail(f"unknown field(s) {', '.join(unknown)}{where}; allowed: {', '.join(allowed)}")

    def section(self, key: str) -> _Section:
        return _Section(self.data.get(key), f"{self.prefix}{key}.", self.fail)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{self.name(key)} = {value!r}: a non-empty text is required")
        return value.strip()

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None = None, required: bool = False) -> str:
        if key not in self.data and not required:
            return default
        value = self.data.get(key)
        if value not in allowed:
            raise self.fail(f"{self.name(key)} = {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value

    def integer(self, key: str, default: int | None, minimum: int, nullable: bool = False) -> int | None:
        value = self.data.get(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            null = " or null" if nullable else ""
            raise self.fail(f"{self.name(key)} = {value!r} must be an integer >= {minimum}{null}")
        return value

    def number(
        self,
        key: str,
        default: float | None,
        minimum: float,
        nullable: bool = False,
        exclusive: bool = False,
        maximum: float | None = None,
    ) -> float | None:
        value = self.data.get(key, default)
        if value is None and nullable:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (value <= minimum if exclusive else value < minimum) or (maximum is not None and value > maximum):
            bound = f"> {minimum}" if exclusive else f">= {minimum}"
            if maximum is not None:
                bound += f" and <= {maximum}"
            null = " or null" if nullable else ""
            raise self.fail(f"{self.name(key)} = {value!r} must be a number {bound}{null}")
        return float(value)

    def positive_list(self, key: str) -> tuple[float, ...]:
        value = self.data.get(key, [])
        if value is None:
            value = []
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in value
        ):
            raise self.fail(f"{self.name(key)} = {value!r} must be a list of positive numbers")
        return tuple(float(v) for v in value)
