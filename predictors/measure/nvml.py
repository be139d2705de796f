"""GPU power and energy per inference through NVML (`nvidia-ml-py`, imported as `pynvml`).

A reading runs back-to-back inferences for a window of at least one second. Where the GPU
has an energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver
loaded; Volta and newer) the energy is the counter's difference across the window; elsewhere
(or if the counter did not advance) power is polled (`nvmlDeviceGetPowerUsage`, milliwatts)
during the window and energy is mean power x time. Both report the whole board's power
while the sub-network runs, idle share included. Note that `nvmlDeviceGetPowerUsage` is a
one-second average on Ampere and newer: the window's length matters for polling too.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from predictors.measure.optional import MissingPackageError, import_pynvml
from predictors.measure.runner import Runner

MIN_WINDOW_S = 1.0


@dataclass(frozen=True)
class PowerReading:
    power_w: float  # mean board power over the window
    energy_mj: float  # per inference
    window_s: float
    inferences: int
    method: str  # "energy-counter" or "power-polling"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSampler:
    """Power and energy of GPU `gpu_index` while a runner runs back to back."""

    name = "nvml"

    def __init__(
        self,
        gpu_index: int = 0,
        window_s: float = 2.0,
        poll_interval_s: float = 0.02,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if window_s < MIN_WINDOW_S:
            raise ValueError(f"power window_s = {window_s} is too short; it must be at least {MIN_WINDOW_S} s")
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s = {poll_interval_s} must be positive")
        self.nvml = import_pynvml()
        self.window_s = float(window_s)
        self.poll_interval_s = float(poll_interval_s)
        self.clock = clock
        try:
            self.nvml.nvmlInit()
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(int(gpu_index))
            self.gpu_name = _text(self.nvml.nvmlDeviceGetName(self.handle))
            self.driver = _text(self.nvml.nvmlSystemGetDriverVersion())
        except self.nvml.NVMLError as exc:
            raise MissingPackageError(
                f"power sampler nvml cannot reach GPU {gpu_index} through NVML ({exc}); it needs an NVIDIA GPU "
                "and its driver"
            ) from None
        self.has_energy_counter = self._energy_counter_works()

    def _energy_counter_works(self) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError:  # not supported before Volta or on some boards
            return False
        return True

    def _energy_mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def _power_mw(self) -> int:
        return int(self.nvml.nvmlDeviceGetPowerUsage(self.handle))

    def _run_window(self, runner: Runner, tick: Callable[[], None] | None = None) -> tuple[int, float]:
        """Back-to-back inferences until the window is over, then wait for the GPU.
        Returns (inferences, elapsed seconds)."""
        runner.sync()
        start = self.clock()
        n = 0
        while self.clock() - start < self.window_s:
            runner.run()
            n += 1
            if tick is not None:
                tick()
        runner.sync()
        return n, self.clock() - start

    def measure(self, runner: Runner) -> PowerReading:
        """One window of back-to-back inferences. Power is polled throughout (cheap), so that a
        counter that is missing or did not advance falls back on the same window."""
        before = self._energy_mj() if self.has_energy_counter else None
        samples = [self._power_mw()]
        next_poll = self.clock() + self.poll_interval_s

        def tick() -> None:
            nonlocal next_poll
            if self.clock() >= next_poll:
                samples.append(self._power_mw())
                next_poll = self.clock() + self.poll_interval_s

        n, elapsed = self._run_window(runner, tick)
        if before is not None:
            energy = self._energy_mj() - before
            if energy > 0:
                return PowerReading(energy / elapsed / 1e3, energy / n, elapsed, n, "energy-counter")
        samples.append(self._power_mw())
        power_w = statistics.fmean(samples) / 1e3
        return PowerReading(power_w, power_w * elapsed * 1e3 / n, elapsed, n, "power-polling")

    def versions(self) -> dict[str, str]:
        try:
            package = metadata.version("nvidia-ml-py")
        except metadata.PackageNotFoundError:
            package = "?"
        return {"nvidia-driver": self.driver, "nvidia-ml-py": package}

    def close(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()
