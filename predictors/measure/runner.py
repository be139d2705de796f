"""A prepared sub-network on a device: run one inference, wait for the device, time a round.

Backends return runners; the measurement session (warm-up, interleaved rounds, re-measuring,
power windows) only talks to this interface, so it is the same for every device.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from predictors.measure.timing import call_times_ms

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread_cpu": time.thread_time}


class Runner:
    """One inference per `run()`; `sync()` waits for the device; `time_calls(n)` runs `n`
    inferences and returns the time of each (ms), `time_round(n)` the round's value in ms per
    inference. `clock` is `wall` or
    `thread_cpu` (CPU time of the calling thread: for single-threaded CPU inference, the
    latency the CPU gives when no other process takes the core)."""

    def __init__(self, run: Callable[[], Any], close: Callable[[], None] | None = None, clock: str = "wall") -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock = {clock!r} is not allowed; allowed: {', '.join(CLOCKS)}")
        self._run = run
        self._close = close
        self.clock = clock

    def run(self) -> None:
        self._run()

    def sync(self) -> None:
        """Synchronous (CPU) runners have nothing to wait for."""

    def time_calls(self, iterations: int) -> list[float]:
        """The time of each of `iterations` back-to-back calls (ms)."""
        return call_times_ms(self._run, iterations, CLOCKS[self.clock])

    def time_round(self, iterations: int) -> float:
        """Median time of `iterations` calls: robust to a call interrupted by another process."""
        return statistics.median(self.time_calls(iterations))

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


class CudaEventRunner(Runner):
    """GPU work is asynchronous: a round is `iterations` back-to-back launches between two CUDA
    events recorded on the runner's stream; its value is the event time divided by `iterations`.
    `cuda` is the `torch.cuda` module (a stand-in in tests without a GPU)."""

    def __init__(
        self, run: Callable[[], Any], cuda: Any, stream: Any = None, close: Callable[[], None] | None = None
    ) -> None:
        super().__init__(run, close)
        self.cuda = cuda
        self.stream = stream

    def sync(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        else:
            self.cuda.synchronize()

    def time_calls(self, iterations: int) -> list[float]:
        """One value, the round's mean: single asynchronous launches are not timed alone."""
        return [self.time_round(iterations)]

    def time_round(self, iterations: int) -> float:
        start = self.cuda.Event(enable_timing=True)
        end = self.cuda.Event(enable_timing=True)
        self.sync()  # nothing queued from before may land inside the timed region
        start.record(self.stream)
        for _ in range(iterations):
            self._run()
        end.record(self.stream)
        end.synchronize()
        return float(start.elapsed_time(end)) / iterations
