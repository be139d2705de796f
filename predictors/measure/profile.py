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

from ofa.paths import REPO_ROOT, supernet_config
from predictors.measure.backend import Backend
from predictors.measure.backends import BACKENDS, GPU_BACKENDS, backend_class
from predictors.measure.fields import Section
from predictors.measure.session import TimingPlan
from predictors.measure.timing import STATISTICS

HW_PROFILES_DIR = REPO_ROOT / "hw_profiles"
PROFILE_FILE = "profile.yaml"

PRECISIONS = ("fp32", "fp16", "int8")
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
_PLAN = TimingPlan()  # the defaults of the fields a profile shares with the timing plan


class ProfileError(ValueError):
    """A bad profile.yaml: the message names the file, the field, the value and what is allowed."""


@dataclass(frozen=True)
class TimingSettings:
    warmup: int = _PLAN.warmup
    warmup_s: float = _PLAN.warmup_s
    rounds: int = _PLAN.rounds
    iterations_per_round: int | None = _PLAN.iterations_per_round
    min_round_ms: float | None = _PLAN.min_round_ms
    clock: str = "wall"
    statistic: str = _PLAN.statistic
    floor_quantile: float = _PLAN.floor_quantile
    normalize: str = "none"
    reference_ms: float | None = None


@dataclass(frozen=True)
class NoiseSettings:
    cv_threshold: float = _PLAN.cv_threshold
    max_remeasure: int = _PLAN.max_remeasure
    group_size: int = 8
    drift_warn: float = 0.05
    min_calm_fraction: float = _PLAN.min_calm_fraction
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
        return backend_class(self.backend)(
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
        return supernet_config(self.supernet)

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
    """A validated profile from its YAML mapping; every default is the settings dataclasses' own."""
    where = str(path)

    def fail(message: str) -> ProfileError:
        return ProfileError(f"{where}: {message}")

    top = Section(data, "", fail)
    top.check_keys(*TOP_FIELDS)
    hardware = top.text("hardware")
    backend, precision = _parse_backend(top)
    supernet = _parse_supernet(top)
    timing = _parse_timing(top.section("timing"))
    threads = top.integer("threads", None, minimum=1, nullable=True)
    if timing.clock == "thread_cpu" and (backend in GPU_BACKENDS or threads != 1):
        raise fail(
            f"timing.clock = 'thread_cpu' times the CPU work of the calling thread; it needs a CPU backend and "
            f"threads: 1 (backend {backend}, threads {threads}); use clock: wall"
        )
    noise = _parse_noise(top.section("noise"))
    power = _parse_power(top.section("power"), backend)
    budgets = _parse_budgets(top.section("budgets"), power)
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


TOP_FIELDS = ("hardware", "supernet", "backend", "precision", "batch_size", "threads", "gpu_index", "onnx_exporter",
              "timing", "noise", "power", "budgets")  # fmt: skip


def _parse_backend(top: Section) -> tuple[str, str]:
    backend = top.choice("backend", tuple(BACKENDS), required=True)
    precision = top.choice("precision", PRECISIONS, default="fp32")
    allowed = BACKENDS[backend].precisions
    if precision not in allowed:
        note = PRECISION_NOTES.get((backend, precision), "")
        raise top.fail(
            f"precision = {precision!r} is not supported by backend {backend}; allowed: "
            f"{', '.join(allowed)}" + (f" ({note})" if note else "")
        )
    return backend, precision


def _parse_supernet(top: Section) -> str:
    supernet = top.text("supernet")
    try:
        supernet_config(supernet)
    except ValueError as e:
        raise top.fail(str(e)) from None
    return supernet


def _parse_timing(s: Section) -> TimingSettings:
    s.check_keys(*(f.name for f in fields(TimingSettings)))
    d = TimingSettings()
    timing = TimingSettings(
        warmup=s.integer("warmup", d.warmup, minimum=0),
        warmup_s=s.number("warmup_s", d.warmup_s, minimum=0.0),
        rounds=s.integer("rounds", d.rounds, minimum=1),
        iterations_per_round=s.integer("iterations_per_round", d.iterations_per_round, minimum=1, nullable=True),
        min_round_ms=s.number("min_round_ms", d.min_round_ms, minimum=0.0, nullable=True, exclusive=True),
        clock=s.choice("clock", CLOCKS, default=d.clock),
        statistic=s.choice("statistic", STATISTICS, default=d.statistic),
        floor_quantile=s.number("floor_quantile", d.floor_quantile, minimum=0.0, maximum=0.5),
        normalize=s.choice("normalize", NORMALIZE, default=d.normalize),
        reference_ms=s.number("reference_ms", d.reference_ms, minimum=0.0, nullable=True, exclusive=True),
    )
    if timing.reference_ms is not None and timing.normalize == "none":
        raise s.fail(
            f"timing.reference_ms = {timing.reference_ms} anchors normalised latencies, but timing.normalize is "
            "none; set normalize: reference, or remove reference_ms"
        )
    if (timing.iterations_per_round is None) == (timing.min_round_ms is None):
        raise s.fail(
            "timing needs exactly one of iterations_per_round (a fixed count) and min_round_ms "
            f"(a minimum measured time per round); got iterations_per_round = {timing.iterations_per_round}, "
            f"min_round_ms = {timing.min_round_ms}"
        )
    return timing


def _parse_noise(s: Section) -> NoiseSettings:
    s.check_keys(*(f.name for f in fields(NoiseSettings)))
    d = NoiseSettings()
    return NoiseSettings(
        cv_threshold=s.number("cv_threshold", d.cv_threshold, minimum=0.0, exclusive=True),
        max_remeasure=s.integer("max_remeasure", d.max_remeasure, minimum=0),
        group_size=s.integer("group_size", d.group_size, minimum=1),
        drift_warn=s.number("drift_warn", d.drift_warn, minimum=0.0, exclusive=True),
        min_calm_fraction=s.number("min_calm_fraction", d.min_calm_fraction, minimum=0.0, maximum=1.0),
        group_retries=s.integer("group_retries", d.group_retries, minimum=0),
    )


def _parse_power(s: Section, backend: str) -> PowerSettings:
    s.check_keys(*(f.name for f in fields(PowerSettings)))
    d = PowerSettings()
    power = PowerSettings(
        sampler=s.choice("sampler", SAMPLERS, default=d.sampler),
        window_s=s.number("window_s", d.window_s, minimum=1.0),
        poll_interval_s=s.number("poll_interval_s", d.poll_interval_s, minimum=0.0, exclusive=True),
    )
    if power.sampler == "nvml" and backend not in GPU_BACKENDS:
        raise s.fail(
            f"power.sampler = 'nvml' reads an NVIDIA GPU, but backend {backend} runs on the CPU; "
            f"use sampler none, or a GPU backend ({', '.join(GPU_BACKENDS)})"
        )
    return power


def _parse_budgets(s: Section, power: PowerSettings) -> Budgets:
    s.check_keys(*(f.name for f in fields(Budgets)))
    budgets = Budgets(**{f.name: s.positive_list(f.name) for f in fields(Budgets)})
    if not any(getattr(budgets, f.name) for f in fields(Budgets)):
        raise s.fail("budgets has no budget; give at least one of latency_ms, power_w, energy_mj (lists)")
    if (budgets.power_w or budgets.energy_mj) and power.sampler == "none":
        raise s.fail("budgets.power_w / energy_mj need power measurements, but power.sampler is none")
    return budgets
