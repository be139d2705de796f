"""Latency of static torch modules on this CPU (eval mode, inference mode).

`TorchCpuBackend` is the `torch-cpu` backend of device profiles; `measure_torch_cpu` is the
quick helper the main job uses to time a few modules side by side.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ofa.threads import torch_threads
from predictors.measure.backend import Backend, Model, require_module, versions_of
from predictors.measure.runner import Runner
from predictors.measure.timing import TimingStats, interleaved_rounds

__all__ = ["TorchCpuBackend", "inference_call", "measure_torch_cpu", "torch_threads"]


def inference_call(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


class TorchCpuBackend(Backend):
    name = "torch-cpu"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._threads = contextlib.ExitStack()
        self._threads.enter_context(torch_threads(self.threads))  # process-wide: restored by close()

    def prepare(self, model: Model, input_shape: Sequence[int], key: str) -> Runner:
        module = copy.deepcopy(require_module(model, self.name)).cpu().eval()
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
        return Runner(inference_call(module, x), clock=self.clock)

    def versions(self) -> dict[str, str]:
        return versions_of("torch")

    def close(self) -> None:
        self._threads.close()


def measure_torch_cpu(
    models: Mapping[str, tuple[nn.Module, Sequence[int]]],
    rounds: int = 7,
    calls_per_round: int = 10,
    warmup_calls: int = 3,
    progress: Callable[[int], None] | None = None,
) -> dict[str, TimingStats]:
    """Time each model on its own input shape (a batch of zeros), rounds interleaved across models."""
    calls = {}
    for name, (model, shape) in models.items():
        model.eval()
        calls[name] = inference_call(model, torch.zeros(*shape))
    per_round = interleaved_rounds(calls, rounds, calls_per_round, warmup_calls, progress)
    return {name: TimingStats.from_rounds(values) for name, values in per_round.items()}
