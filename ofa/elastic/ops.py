"""Elastic layers: each holds the weights of its largest form and runs a slice of them.

What a layer runs is chosen by arguments (the input's channel count, `out_channels`) or by
state set on the layer itself (`active_out_channels`, `active_kernel_size`); nothing is read
from module-level flags. Each layer also exposes the exact tensors of its active form
(`active_weight`, `active_filter`, ...) so that extraction copies what the forward uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ofa.kernels.depthwise import depthwise_conv2d
from ofa.space import se_channels


class DynamicPointwiseConv2d(nn.Module):
    """1x1 convolution on the first `in` input and first `out` output channels of its weight.

    The input width is read off the input; the output width is `out_channels` when given,
    else the layer's `active_out_channels`.
    """

    def __init__(self, max_in_channels: int, max_out_channels: int, bias: bool = False) -> None:
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.weight = nn.Parameter(torch.empty(max_out_channels, max_in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(max_out_channels)) if bias else None
        self.active_out_channels = max_out_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Conv2d of the full size.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.max_in_channels)
            nn.init.uniform_(self.bias, -bound, bound)

    def active_weight(self, in_channels: int, out_channels: int) -> Tensor:
        return self.weight[:out_channels, :in_channels]

    def active_bias(self, out_channels: int) -> Tensor | None:
        return None if self.bias is None else self.bias[:out_channels]

    def forward(self, x: Tensor, out_channels: int | None = None) -> Tensor:
        out = self.active_out_channels if out_channels is None else out_channels
        return F.conv2d(x, self.active_weight(x.shape[1], out), self.active_bias(out))

    def extra_repr(self) -> str:
        return f"{self.max_in_channels}, {self.max_out_channels}, bias={self.bias is not None}"


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise convolution with elastic kernel size through kernel transformation.

    One kernel of the largest size is kept. A smaller kernel takes the centre of the next
    larger (already transformed) kernel and multiplies each channel's flattened values by a
    learned matrix shared by the channels of this layer (initialised to identity), as in the
    OFA paper: 7x7 -> centre 5x5 -> 25x25 matrix; that 5x5 -> centre 3x3 -> 9x9 matrix.
    """

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int = 1) -> None:
        super().__init__()
        self.max_channels = max_channels
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.max_kernel_size = self.kernel_sizes[-1]
        self.stride = stride
        k = self.max_kernel_size
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k, k))
        # One matrix per step down, named "<from>to<to>" (e.g. "7to5").
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1])
            }
        )
        self.active_kernel_size = k
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def active_filter(self, channels: int, kernel_size: int) -> Tensor:
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel_size = {kernel_size} is not allowed; allowed: {list(self.kernel_sizes)}")
        filt = self.weight[:channels]
        size = self.max_kernel_size
        for small in reversed(self.kernel_sizes):
            if small >= size:
                continue
            if small < kernel_size:
                break
            start = (size - small) // 2
            centre = filt[:, :, start : start + small, start : start + small]
            matrix = self.transforms[f"{size}to{small}"]
            filt = F.linear(centre.reshape(channels, small * small), matrix).view(channels, 1, small, small)
            size = small
        return filt

    def forward(self, x: Tensor, kernel_size: int | None = None) -> Tensor:
        k = self.active_kernel_size if kernel_size is None else kernel_size
        return depthwise_conv2d(x, self.active_filter(x.shape[1], k), self.stride)

    def extra_repr(self) -> str:
        return f"{self.max_channels}, kernel_sizes={self.kernel_sizes}, stride={self.stride}"


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first C channels, C read off the input.

    Running statistics of the active channels are updated in place (the slices are views),
    so recalibrating one sub-network touches only the channels it uses.
    """

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean[:channels],
            None if self.running_var is None else self.running_var[:channels],
            self.weight[:channels] if self.affine else None,
            self.bias[:channels] if self.affine else None,
            use_batch_stats,
            factor,
            self.eps,
        )


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-and-excite over the first C channels with hidden width se_channels(C)."""

    def __init__(self, max_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduction = reduction
        max_mid = se_channels(max_channels, reduction)
        self.reduce = DynamicPointwiseConv2d(max_channels, max_mid, bias=True)
        self.expand = DynamicPointwiseConv2d(max_mid, max_channels, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        scale = x.mean((2, 3), keepdim=True)
        scale = F.relu(self.reduce(scale, se_channels(channels, self.reduction)), inplace=True)
        scale = F.hardsigmoid(self.expand(scale, channels), inplace=True)
        return x * scale
