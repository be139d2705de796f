"""One measurement session over prepared runners, with noise control.

- Warm-up: `warmup` inferences, and at least `warmup_s` seconds (GPU clocks ramp up).
- Iterations per round: fixed, or as many as fill `min_round_ms` (from a short probe).
- Rounds interleaved across all runners (the order rotates), so a slow spell of the machine
  hits every sub-network alike instead of one; each runner's figure is the median of its
  round values (each round is a median of calls on the CPU, an event-timed mean on GPUs).
- A runner whose coefficient of variation across rounds exceeds `cv_threshold` is measured
  again (interleaved with the other noisy ones), up to `max_remeasure` times; the steadier
  of its sessions is kept and the number of re-measurements recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from predictors.measure.backend import Backend, Model
from predictors.measure.nvml import PowerReading
from predictors.measure.runner import Runner
from predictors.measure.timing import TimingStats, interleaved_timed_rounds


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 10
    warmup_s: float = 0.0
    rounds: int = 7
    iterations_per_round: int | None = None
    min_round_ms: float | None = 50.0
    cv_threshold: float = 0.05
    max_remeasure: int = 2
    max_iterations: int = 100_000

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds = {self.rounds} must be at least 1")
        if (self.iterations_per_round is None) == (self.min_round_ms is None):
            raise ValueError("set exactly one of iterations_per_round and min_round_ms")
        if self.iterations_per_round is not None and self.iterations_per_round < 1:
            raise ValueError(f"iterations_per_round = {self.iterations_per_round} must be at least 1")
        if self.min_round_ms is not None and self.min_round_ms <= 0:
            raise ValueError(f"min_round_ms = {self.min_round_ms} must be positive")


@dataclass(frozen=True)
class Timed:
    stats: TimingStats
    iterations: int
    remeasured: int
    rounds_ms: tuple[float, ...] = field(repr=False)


def warm_up(runner: Runner, plan: TimingPlan, clock: Callable[[], float] = time.perf_counter) -> None:
    start = clock()
    done = 0
    while done < plan.warmup or clock() - start < plan.warmup_s:
        runner.run()
        done += 1
    runner.sync()


def iterations_for(runner: Runner, plan: TimingPlan) -> int:
    """Fixed iterations, or enough to fill `min_round_ms` judged by the fastest of 3 single calls."""
    if plan.iterations_per_round is not None:
        return plan.iterations_per_round
    probe_ms = min(runner.time_round(1) for _ in range(3))
    return max(1, min(plan.max_iterations, math.ceil(plan.min_round_ms / max(probe_ms, 1e-6))))


def time_runners(
    runners: Mapping[str, Runner], plan: TimingPlan, progress: Callable[[int], None] | None = None
) -> dict[str, Timed]:
    """Warm up, then time every runner in interleaved rounds; re-measure the noisy ones."""
    for runner in runners.values():
        warm_up(runner, plan)
    iterations = {name: iterations_for(runner, plan) for name, runner in runners.items()}

    def session(names: Sequence[str], report: Callable[[int], None] | None = None) -> dict[str, list[float]]:
        timers = {name: (lambda r=runners[name], n=iterations[name]: r.time_round(n)) for name in names}
        return interleaved_timed_rounds(timers, plan.rounds, report)

    result = {
        name: Timed(TimingStats.from_rounds(values), iterations[name], 0, tuple(values))
        for name, values in session(list(runners), progress).items()
    }
    for _ in range(plan.max_remeasure):
        noisy = [name for name, t in result.items() if t.stats.cv > plan.cv_threshold]
        if not noisy:
            break
        for name, values in session(noisy).items():
            old = result[name]
            new = TimingStats.from_rounds(values)
            keep_new = new.cv < old.stats.cv
            result[name] = Timed(
                new if keep_new else old.stats,
                old.iterations,
                old.remeasured + 1,
                tuple(values) if keep_new else old.rounds_ms,
            )
    return result


@dataclass(frozen=True)
class Measurement:
    """What one sub-network measured on one device, with the conditions of the measurement."""

    latency: TimingStats
    iterations_per_round: int
    remeasured: int
    backend: str
    precision: str
    batch_size: int
    threads: int | None
    clock: str
    host: str
    hardware: str
    versions: Mapping[str, str]
    power: PowerReading | None = None

    def to_row(self) -> dict[str, Any]:
        """The flat CSV form (latency in ms, power in W, energy per inference in mJ)."""
        s = self.latency
        return {
            "latency_ms": round(s.median_ms, 5),
            "latency_p10_ms": round(s.p10_ms, 5),
            "latency_p90_ms": round(s.p90_ms, 5),
            "latency_iqr_ms": round(s.iqr_ms, 5),
            "latency_cv": round(s.cv, 5),
            "latency_rounds": s.n_rounds,
            "iterations_per_round": self.iterations_per_round,
            "remeasured": self.remeasured,
            "power_w": "" if self.power is None else round(self.power.power_w, 4),
            "energy_mj": "" if self.power is None else round(self.power.energy_mj, 5),
            "power_method": "" if self.power is None else self.power.method,
            "power_window_s": "" if self.power is None else round(self.power.window_s, 3),
            "backend": self.backend,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "threads": "" if self.threads is None else self.threads,
            "clock": self.clock,
            "host": self.host,
            "hardware": self.hardware,
            "versions": format_versions(self.versions),
        }


def format_versions(versions: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(versions.items()))


def measure_runners(
    backend: Backend,
    runners: Mapping[str, Runner],
    plan: TimingPlan,
    sampler: Any = None,
    progress: Callable[[int], None] | None = None,
    no_power: Collection[str] = (),
) -> dict[str, Measurement]:
    """Time prepared runners and read their power with `sampler` (e.g. an `NvmlSampler`),
    except for the runners named in `no_power`."""
    timed = time_runners(runners, plan, progress)
    versions = dict(backend.versions())
    if sampler is not None:
        versions.update(sampler.versions())
    host, hardware = backend.host(), backend.hardware()
    out = {}
    for name, t in timed.items():
        power = sampler.measure(runners[name]) if sampler is not None and name not in no_power else None
        out[name] = Measurement(
            t.stats,
            t.iterations,
            t.remeasured,
            backend.name,
            backend.precision,
            backend.batch_size,
            backend.threads,
            backend.clock,
            host,
            hardware,
            versions,
            power,
        )
    return out


def measure_models(
    backend: Backend,
    models: Mapping[str, tuple[Model, Sequence[int]]],
    plan: TimingPlan,
    sampler: Any = None,
) -> dict[str, Measurement]:
    """Measure static sub-networks (or ONNX files) with their input shapes, rounds interleaved.
    The names are the backend's cache keys: make them identify the network (e.g. `arch.key()`)."""
    runners = {name: backend.prepare(model, shape, name) for name, (model, shape) in models.items()}
    try:
        return measure_runners(backend, runners, plan, sampler)
    finally:
        for runner in runners.values():
            runner.close()
