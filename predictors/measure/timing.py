"""Timing in interleaved rounds, summarised with robust statistics.

CPU timings on shared machines drift by several percent between runs, so candidates are
timed round-robin (the order rotates each round) and compared through per-round values:
each round's value is the median of its individual call times.

Two summaries of a candidate are kept (`STATISTICS`):
- `median`: the median of its round values: the typical speed while it was measured.
- `floor`: a low quantile (`floor_quantile`, 5% by default) of all its call times pooled
  across rounds: the speed the machine gives when nothing else slows it. On a shared VM the
  noise is one-sided: spells of 0.1-1 s in which every call runs 1.1-1.6x slower (another
  tenant on the same physical core or cache), between which calls return to a steady floor.
  The median moves with the share of slow spells; the floor does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")
STATISTICS = ("median", "floor")
DEFAULT_FLOOR_QUANTILE = 0.05


@dataclass(frozen=True)
class TimingStats:
    """Statistics across rounds of one candidate (milliseconds)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float  # std / mean across rounds
    n_rounds: int
    floor_ms: float  # `floor_quantile` of the calls pooled across rounds (of the rounds if calls are not timed alone)
    n_calls: int  # the timed calls pooled for `floor_ms`

    @classmethod
    def from_rounds(
        cls,
        values_ms: Sequence[float],
        calls_ms: Sequence[float] | None = None,
        floor_quantile: float = DEFAULT_FLOOR_QUANTILE,
    ) -> TimingStats:
        """Summarise round values; `calls_ms` are the single call times of all rounds pooled
        (GPU rounds are event-timed means, so there the floor is taken over the rounds)."""
        if not values_ms:
            raise ValueError("no rounds to summarise")
        if not 0.0 <= floor_quantile <= 0.5:
            raise ValueError(f"floor_quantile = {floor_quantile} must lie in [0, 0.5]")
        q = quantiles(values_ms, (0.10, 0.25, 0.50, 0.75, 0.90))
        mean = statistics.fmean(values_ms)
        std = statistics.pstdev(values_ms) if len(values_ms) > 1 else 0.0
        pooled = list(calls_ms) if calls_ms else list(values_ms)
        (floor,) = quantiles(pooled, (floor_quantile,))
        return cls(q[2], q[0], q[4], q[3] - q[1], std / mean if mean else 0.0, len(values_ms), floor, len(pooled))

    def value_ms(self, statistic: str) -> float:
        """The figure a profile reports: `median` or `floor` (see the module docstring)."""
        if statistic == "median":
            return self.median_ms
        if statistic == "floor":
            return self.floor_ms
        raise ValueError(f"statistic = {statistic!r} is not allowed; allowed: {', '.join(STATISTICS)}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def quantiles(values: Sequence[float], probs: Sequence[float]) -> list[float]:
    """Linear-interpolated quantiles (numpy's default method) without numpy."""
    data = sorted(values)
    out = []
    for p in probs:
        pos = p * (len(data) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(data) - 1)
        out.append(data[lo] + (data[hi] - data[lo]) * (pos - lo))
    return out


def interleaved(
    timers: Mapping[str, Callable[[], T]],
    rounds: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[T]]:
    """Call each candidate's round timer `rounds` times, rounds interleaved across candidates
    (the order rotates each round so no candidate always runs first); each candidate's results
    in round order."""
    if rounds < 1:
        raise ValueError(f"rounds = {rounds} must be at least 1")
    names = list(timers)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            results[name].append(timers[name]())
        if progress is not None:
            progress(r + 1)
    return results


def interleaved_timed_rounds(
    timers: Mapping[str, Callable[[], float]],
    rounds: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """`interleaved` for timers that run one round and return its value in ms (e.g. the median
    call time, or CUDA-event time per call)."""
    return {name: [float(v) for v in values] for name, values in interleaved(timers, rounds, progress).items()}


def call_times_ms(fn: Callable[[], object], calls: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """The time (ms) of each of `calls` calls of `fn` on `clock` (wall clock by default; `time.thread_time`
    counts only the CPU time of the calling thread: time switched out for other processes does not count)."""
    times = []
    for _ in range(calls):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return times


def median_call_ms(fn: Callable[[], object], calls: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time (ms) of `calls` calls of `fn` on `clock` (see `call_times_ms`)."""
    return statistics.median(call_times_ms(fn, calls, clock))


def interleaved_rounds(
    candidates: Mapping[str, Callable[[], object]],
    rounds: int = 7,
    calls_per_round: int = 5,
    warmup_calls: int = 2,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Per-round median call time (ms) of each candidate, rounds interleaved across candidates."""
    if rounds < 1 or calls_per_round < 1:
        raise ValueError(f"rounds = {rounds} and calls_per_round = {calls_per_round} must be at least 1")
    for fn in candidates.values():
        for _ in range(warmup_calls):
            fn()
    timers = {name: (lambda fn=fn: median_call_ms(fn, calls_per_round)) for name, fn in candidates.items()}
    return interleaved_timed_rounds(timers, rounds, progress)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two candidates timed in the same rounds."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]
