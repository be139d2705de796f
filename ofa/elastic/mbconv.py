"""The elastic inverted-residual (MBConv) block: elastic kernel size and expand ratio."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ofa.activations import make_activation
from ofa.elastic.ops import (
    DynamicBatchNorm2d,
    DynamicDepthwiseConv2d,
    DynamicPointwiseConv2d,
    DynamicSqueezeExcite,
)
from ofa.kernels.batch_norm_act import batch_norm_act
from ofa.space import middle_channels


class DynamicMBConv(nn.Module):
    """1x1 expand + BN + act, depthwise kxk + BN + act, optional SE, 1x1 project + BN.

    Fixed input and output widths; the middle width follows `active_expand_ratio` and the
    depthwise kernel `active_kernel_size`. Identity shortcut when stride 1 and in == out.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: tuple[int, ...],
        expand_ratios: tuple[int, ...],
        stride: int,
        activation: str,
        use_se: bool,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.stride = stride
        self.use_residual = stride == 1 and in_channels == out_channels
        max_mid = middle_channels(in_channels, self.expand_ratios[-1])
        self.expand_conv = DynamicPointwiseConv2d(in_channels, max_mid)
        self.expand_bn = DynamicBatchNorm2d(max_mid)
        self.dw_conv = DynamicDepthwiseConv2d(max_mid, kernel_sizes, stride)
        self.dw_bn = DynamicBatchNorm2d(max_mid)
        self.se = DynamicSqueezeExcite(max_mid, se_reduction) if use_se else None
        self.project_conv = DynamicPointwiseConv2d(max_mid, out_channels)
        self.project_bn = DynamicBatchNorm2d(out_channels)
        self.act = make_activation(activation)
        self.active_expand_ratio = self.expand_ratios[-1]

    # --- active sub-block ------------------------------------------------------------
    @property
    def active_kernel_size(self) -> int:
        return self.dw_conv.active_kernel_size

    def set_active(self, kernel_size: int, expand_ratio: int) -> None:
        if kernel_size not in self.dw_conv.kernel_sizes:
            raise ValueError(f"kernel_size = {kernel_size} is not allowed; allowed: {list(self.dw_conv.kernel_sizes)}")
        if expand_ratio not in self.expand_ratios:
            raise ValueError(f"expand_ratio = {expand_ratio} is not allowed; allowed: {list(self.expand_ratios)}")
        self.dw_conv.active_kernel_size = kernel_size
        self.active_expand_ratio = expand_ratio
        self.expand_conv.active_out_channels = self.active_middle_channels

    @property
    def active_middle_channels(self) -> int:
        return middle_channels(self.in_channels, self.active_expand_ratio)

    def forward(self, x: Tensor) -> Tensor:
        out = batch_norm_act(self.expand_bn, self.expand_conv(x), self.act)
        out = batch_norm_act(self.dw_bn, self.dw_conv(out), self.act)
        if self.se is not None:
            out = self.se(out)
        out = batch_norm_act(self.project_bn, self.project_conv(out))
        return out + x if self.use_residual else out

    # --- channel re-organisation -----------------------------------------------------
    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort middle channels by importance (L1 norm of the project conv's input weights),
        so that every expand ratio runs the most important channels.

        The permutation is applied consistently to every tensor that touches a middle
        channel, so the full block computes the same function. With `expand_stage` = n > 0,
        channels are sorted within the width groups of the n + 1 largest expand ratios
        (a channel inside the width of the smaller ratio trained so far stays inside it), as
        OFA does when each expand phase starts.
        """
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        if expand_stage > 0:
            widths = [middle_channels(self.in_channels, r) for r in sorted(self.expand_ratios, reverse=True)]
            right, penalty = len(importance), -len(widths) * 1e5
            for left in widths[: expand_stage + 1]:
                importance[left:right] += penalty  # channels beyond `left` rank after those within it
                penalty += 1e5
                right = left
        order = torch.argsort(importance, descending=True)

        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        _permute_bn(self.dw_bn, order)
        self.dw_conv.weight.copy_(self.dw_conv.weight[order])
        _permute_bn(self.expand_bn, order)
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        if self.se is not None:
            se = self.se
            se.expand.weight.copy_(se.expand.weight[order])
            se.expand.bias.copy_(se.expand.bias[order])
            se.reduce.weight.copy_(se.reduce.weight[:, order])
            # The SE hidden channels are elastic too: sort them by their own importance.
            se_order = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            se.expand.weight.copy_(se.expand.weight[:, se_order])
            se.reduce.weight.copy_(se.reduce.weight[se_order])
            se.reduce.bias.copy_(se.reduce.bias[se_order])


def _permute_bn(bn: nn.BatchNorm2d, order: Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        if t is not None:
            t.copy_(t[order])
