"""Depthwise convolution with a cheaper weight gradient on CPUs.

Profiling the default space's training step (bench/train_step.py) showed the weight gradient
of the 5x5 and 7x7 depthwise convolutions as the largest single cost on a CPU: oneDNN's
backward-weights kernel for them runs 5-10x slower than the forward. The same gradient is a
correlation of each image's input channel with its output gradient, summed over the batch,
which is itself a depthwise convolution with one group per (image, channel) pair; oneDNN's
forward kernel computes it about twice as fast; a small C kernel of our own
(`ofa/kernels/csrc/`, compiled on first use by `ofa.kernels.compiled`) about five times.
The C kernel is the default where it builds (float32), the grouped convolution otherwise.
The forward is oneDNN's; so is the input gradient, computed at stride 1 as the forward of the
output gradient with the flipped kernel (oneDNN's forward is about twice its backward-data).
On other devices, for 3x3 kernels (where oneDNN's backward is already fast) and without
autograd, this is plain `F.conv2d`. The elastic and the static blocks both call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ofa.kernels import compiled

FAST_GRAD_MIN_KERNEL = 5  # below this, oneDNN's own backward is as fast
# How the CPU weight gradient of large kernels is computed: "compiled" (the C kernel, falling
# back to "conv" where it is unavailable), "conv" (grouped convolution), "native" (oneDNN's).
WEIGHT_GRAD_PATHS = ("compiled", "conv", "native")
_weight_grad_path: ContextVar[str] = ContextVar("weight_grad_path", default="compiled")


@contextmanager
def weight_grad_path(name: str) -> Iterator[None]:
    """Compute large depthwise weight gradients by `name` inside the block (benchmarks compare them)."""
    if name not in WEIGHT_GRAD_PATHS:
        raise ValueError(f"weight-gradient path {name!r} is not allowed; allowed: {', '.join(WEIGHT_GRAD_PATHS)}")
    token = _weight_grad_path.set(name)
    try:
        yield
    finally:
        _weight_grad_path.reset(token)


def depthwise_conv2d(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """`F.conv2d(x, weight, stride=stride, padding=k // 2, groups=channels)` (same values and
    gradients); on CPUs, for large kernels, the weight gradient by the path `weight_grad_path`
    names (the compiled kernel by default) and the stride-1 input gradient as a convolution."""
    k = weight.shape[-1]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if x.device.type == "cpu" and needs_grad and k >= FAST_GRAD_MIN_KERNEL and _weight_grad_path.get() != "native":
        return _DepthwiseConv.apply(x, weight, stride)
    return F.conv2d(x, weight, None, stride, k // 2, 1, weight.shape[0])


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.path = stride, _weight_grad_path.get()
        return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        stride, (channels, _, k, _) = ctx.stride, weight.shape
        grad_x = grad_w = None
        if ctx.needs_input_grad[0] and stride == 1:
            # the input gradient of a stride-1 "same" convolution is the same convolution of the
            # output gradient with the flipped kernel; oneDNN's forward is twice its backward
            grad_x = F.conv2d(grad_out, weight.flip(-2, -1), None, 1, k // 2, 1, channels)
        elif ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], channels,
                [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_w = None
            if ctx.path == "compiled" and x.dtype == torch.float32:
                grad_w = compiled.depthwise_weight_grad(x, grad_out, k, stride)
            if grad_w is None:
                grad_w = _weight_grad(x, grad_out, k, stride)
        return grad_x, grad_w, None


def _weight_grad(x: Tensor, grad_out: Tensor, k: int, stride: int) -> Tensor:
    """d loss / d weight of a depthwise convolution: each (image, channel) input plane
    correlated with its output-gradient plane (dilated by the stride), summed over images.
    The input is laid out (h, w, image, channel), a cheap copy from channels-last that makes
    (image, channel) one channels-last group axis, the layout oneDNN's kernel is fast in."""
    n, c, h, w = x.shape
    planes = x.permute(2, 3, 0, 1).contiguous().view(1, h, w, n * c).permute(0, 3, 1, 2)
    kernels = grad_out.contiguous().view(n * c, 1, *grad_out.shape[2:])
    corr = F.conv2d(planes, kernels, None, 1, k // 2, stride, n * c)  # (1, n*c, >=k, >=k)
    corr = corr.permute(0, 2, 3, 1)[0, :k, :k].reshape(k, k, n, c).sum(2)
    return corr.permute(2, 0, 1).unsqueeze(1)
