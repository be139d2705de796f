"""One measurement session over prepared runners, with noise control.

- Warm-up: `warmup` inferences, and at least `warmup_s` seconds (GPU clocks ramp up).
- Iterations per round: fixed, or as many as fill `min_round_ms` (from a short probe).
- Rounds interleaved across all runners (the order rotates), so a slow spell of the machine
  hits every sub-network alike instead of one; each round's value is the median of its calls
  on the CPU, an event-timed mean on GPUs.
- The reported figure is the plan's `statistic` (see `predictors.measure.timing`): `median`,
  the median of the round values, or `floor`, a low quantile of all calls pooled across rounds.
- Noise control. `median`: a runner whose coefficient of variation across rounds exceeds
  `cv_threshold` is measured again (interleaved with the other noisy ones), up to
  `max_remeasure` times, and the steadier of its sessions is kept. `floor`: slow spells make
  the CV large by nature; what matters is that enough rounds ran at the floor speed, so a
  runner with fewer than `min_calm_fraction` of its rounds within `cv_threshold` of its floor
  is measured again and the new rounds are pooled with the old ones.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from predictors.measure.backend import Backend, Model
from predictors.measure.nvml import PowerReading
from predictors.measure.runner import Runner
from predictors.measure.timing import DEFAULT_FLOOR_QUANTILE, STATISTICS, TimingStats, interleaved


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
    statistic: str = "median"
    floor_quantile: float = DEFAULT_FLOOR_QUANTILE
    min_calm_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds = {self.rounds} must be at least 1")
        if (self.iterations_per_round is None) == (self.min_round_ms is None):
            raise ValueError("set exactly one of iterations_per_round and min_round_ms")
        if self.iterations_per_round is not None and self.iterations_per_round < 1:
            raise ValueError(f"iterations_per_round = {self.iterations_per_round} must be at least 1")
        if self.min_round_ms is not None and self.min_round_ms <= 0:
            raise ValueError(f"min_round_ms = {self.min_round_ms} must be positive")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic = {self.statistic!r} is not allowed; allowed: {', '.join(STATISTICS)}")


@dataclass(frozen=True)
class Timed:
    stats: TimingStats
    iterations: int
    remeasured: int
    rounds_ms: tuple[float, ...] = field(repr=False)

    def calm_fraction(self, tolerance: float) -> float:
        """The share of rounds whose value lies within `tolerance` (relative) of the floor."""
        limit = self.stats.floor_ms * (1.0 + tolerance)
        return sum(v <= limit for v in self.rounds_ms) / len(self.rounds_ms)


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


def summarise(rounds_calls: Sequence[Sequence[float]], iterations: int, remeasured: int, plan: TimingPlan) -> Timed:
    """Round values (the median of each round's calls) and the pooled calls, summarised."""
    values = [statistics.median(calls) for calls in rounds_calls]
    pooled = [t for calls in rounds_calls for t in calls]
    stats = TimingStats.from_rounds(values, pooled, plan.floor_quantile)
    return Timed(stats, iterations, remeasured, tuple(values))


def is_noisy(t: Timed, plan: TimingPlan) -> bool:
    if plan.statistic == "floor":
        return t.calm_fraction(plan.cv_threshold) < plan.min_calm_fraction
    return t.stats.cv > plan.cv_threshold


def time_runners(
    runners: Mapping[str, Runner], plan: TimingPlan, progress: Callable[[int], None] | None = None
) -> dict[str, Timed]:
    """Warm up, then time every runner in interleaved rounds; re-measure the noisy ones."""
    for runner in runners.values():
        warm_up(runner, plan)
    iterations = {name: iterations_for(runner, plan) for name, runner in runners.items()}

    def session(names: Sequence[str], report: Callable[[int], None] | None = None) -> dict[str, list[list[float]]]:
        timers = {name: (lambda r=runners[name], n=iterations[name]: r.time_calls(n)) for name in names}
        return interleaved(timers, plan.rounds, report)

    sessions = session(list(runners), progress)
    result = {name: summarise(rounds, iterations[name], 0, plan) for name, rounds in sessions.items()}
    for _ in range(plan.max_remeasure):
        noisy = [name for name, t in result.items() if is_noisy(t, plan)]
        if not noisy:
            break
        for name, rounds in session(noisy).items():
            old = result[name]
            if plan.statistic == "floor":  # pool: every round adds chances to catch the floor
                sessions[name] = sessions[name] + rounds
                result[name] = summarise(sessions[name], old.iterations, old.remeasured + 1, plan)
                continue
            new = summarise(rounds, old.iterations, old.remeasured + 1, plan)
            result[name] = new if new.stats.cv < old.stats.cv else replace(old, remeasured=new.remeasured)
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
    statistic: str = "median"

    @property
    def latency_ms(self) -> float:
        """The figure the profile reports (its `timing.statistic`)."""
        return self.latency.value_ms(self.statistic)

    def to_row(self) -> dict[str, Any]:
        """The flat CSV form (latency in ms, power in W, energy per inference in mJ)."""
        s = self.latency
        return {
            "latency_ms": round(self.latency_ms, 5),
            "latency_stat": self.statistic,
            "latency_median_ms": round(s.median_ms, 5),
            "latency_floor_ms": round(s.floor_ms, 5),
            "latency_p10_ms": round(s.p10_ms, 5),
            "latency_p90_ms": round(s.p90_ms, 5),
            "latency_iqr_ms": round(s.iqr_ms, 5),
            "latency_cv": round(s.cv, 5),
            "latency_rounds": s.n_rounds,
            "latency_calls": s.n_calls,
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
            plan.statistic,
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
