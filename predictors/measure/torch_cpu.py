"""Latency of static torch modules on this CPU (eval mode, inference mode, batch of zeros)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from predictors.measure.timing import TimingStats, interleaved_rounds


def measure_torch_cpu(
    models: Mapping[str, tuple[nn.Module, Sequence[int]]],
    rounds: int = 7,
    calls_per_round: int = 10,
    warmup_calls: int = 3,
    progress: Callable[[int], None] | None = None,
) -> dict[str, TimingStats]:
    """Time each model on its own input shape, rounds interleaved across models."""

    def runner(model: nn.Module, shape: Sequence[int]) -> Callable[[], None]:
        model.eval()
        x = torch.zeros(*shape)

        def run() -> None:
            with torch.inference_mode():
                model(x)

        return run

    calls = {name: runner(model, shape) for name, (model, shape) in models.items()}
    per_round = interleaved_rounds(calls, rounds, calls_per_round, warmup_calls, progress)
    return {name: TimingStats.from_rounds(values) for name, values in per_round.items()}
