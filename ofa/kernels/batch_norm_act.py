"""Batch norm + activation in one compiled CPU kernel for training steps.

A supernet step on a CPU runs many small tensors through BN and an activation, forward and
backward; torch does each as its own pass and allocation. `batch_norm_act(bn, x, act)`
computes `act(bn(x))` with the fused kernel of `ofa.kernels.compiled` where it applies (a
training-mode BN with affine weights on a channels-last float32 CPU tensor, activation ReLU,
Hardswish or none) and with `bn` and `act` themselves everywhere else (evaluation, export,
GPUs, float64, a BN with forward hooks, the kernel unavailable or switched off by
`fused_batch_norm(False)`). Both keep the same running statistics (`nn.BatchNorm2d`'s rule,
on the first C channels as `DynamicBatchNorm2d`), and the same values and gradients up to
float32 summation order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from ofa.kernels import compiled

_ACTIVATIONS: dict[type[nn.Module], int] = {nn.ReLU: 1, nn.Hardswish: 2}
_enabled: ContextVar[bool] = ContextVar("fused_batch_norm", default=True)


@contextmanager
def fused_batch_norm(enabled: bool) -> Iterator[None]:
    """Use the fused kernel (True, the default) or torch's BN and activation inside the block."""
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


def batch_norm_act(bn: nn.BatchNorm2d, x: Tensor, act: nn.Module | None = None) -> Tensor:
    """`act(bn(x))` (`bn(x)` when `act` is None), BN over the first `x.shape[1]` channels."""
    code = 0 if act is None else _ACTIVATIONS.get(type(act))
    if code is None or not _applies(bn, x) or compiled.library() is None:
        out = bn(x)
        return out if act is None else act(out)
    momentum, running = _running_update(bn)
    # The whole weight, bias and running statistics go in; the kernel reads and writes their
    # first x.shape[1] entries (no slice views, which cost more than the arithmetic here).
    return _BatchNormAct.apply(x, bn.weight, bn.bias, running, momentum, bn.eps, code)


def _applies(bn: nn.BatchNorm2d, x: Tensor) -> bool:
    return (
        bn.training  # first: evaluation and export never reach the rest
        and _enabled.get()
        and not (bn._forward_hooks or bn._forward_pre_hooks)  # hooks see the BN only through bn(x)
        and bn.affine
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.numel() > x.shape[1]  # one value per channel: torch's layer, which refuses it
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _running_update(bn: nn.BatchNorm2d) -> tuple[float, tuple[Tensor, Tensor] | None]:
    """nn.BatchNorm2d's bookkeeping for one training forward: (momentum, running stats to move)."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return 0.0, None
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    return momentum, (bn.running_mean, bn.running_var)


class _BatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, running, momentum: float, eps: float, act: int):
        out, mean, invstd = compiled.batch_norm_act_forward(x, weight, bias, running, momentum, eps, act)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.act = act
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        grad_x, grad_w, grad_b = compiled.batch_norm_act_backward(grad_out, ctx.saved_tensors, ctx.act)
        return grad_x, grad_w, grad_b, None, None, None, None
