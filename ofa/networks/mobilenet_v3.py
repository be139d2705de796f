"""Plain (static) MobileNetV3 built from a space and one ArchConfig.

This is what `OFAMobileNetV3.extract_subnet` returns and what gets exported and deployed. It
uses only standard torch layers and imports nothing from `ofa.elastic`, so a sub-network can
be rebuilt from `arch.json` + weights without the supernet code. Training steps on a CPU run
BN + activation as one compiled kernel (`ofa.kernels`); evaluation and export run the layers.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ofa.activations import make_activation
from ofa.kernels.batch_norm_act import batch_norm_act
from ofa.kernels.depthwise import depthwise_conv2d
from ofa.space import ArchConfig, MBV3Space, middle_channels, se_channels


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BN + optional activation, padding k // 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = None,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )
        if activation is not None:
            layers["act"] = make_activation(activation)
        super().__init__(layers)

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm_act(self.bn, self.conv(x), getattr(self, "act", None))


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> h-sigmoid -> scale."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = nn.functional.relu(self.reduce(scale), inplace=True)
        return x * nn.functional.hardsigmoid(self.expand(scale), inplace=True)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand + BN + act], depthwise kxk + BN + act, [SE], 1x1 project + BN.

    The expand conv is absent when `mid_channels == in_channels` and `expand` is False
    (the expand-1 first block).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        activation: str,
        se_hidden: int | None,
        expand: bool = True,
    ) -> None:
        super().__init__()
        if not expand and mid_channels != in_channels:
            raise ValueError(
                f"a block without expand conv needs mid_channels == in_channels, got {mid_channels} != {in_channels}"
            )
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand_conv = nn.Conv2d(in_channels, mid_channels, 1, bias=False) if expand else None
        self.expand_bn = nn.BatchNorm2d(mid_channels) if expand else None
        self.dw_conv = nn.Conv2d(
            mid_channels, mid_channels, kernel_size, stride, kernel_size // 2, groups=mid_channels, bias=False
        )
        self.dw_bn = nn.BatchNorm2d(mid_channels)
        self.se = SqueezeExcite(mid_channels, se_hidden) if se_hidden else None
        self.project_conv = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand_conv is None else batch_norm_act(self.expand_bn, self.expand_conv(x), self.act)
        out = batch_norm_act(self.dw_bn, self._depthwise(out), self.act)
        if self.se is not None:
            out = self.se(out)
        out = batch_norm_act(self.project_bn, self.project_conv(out))
        return out + x if self.use_residual else out

    def _depthwise(self, x: Tensor) -> Tensor:
        """The depthwise conv; in a CPU training step with the cheaper weight gradient of
        `ofa.kernels.depthwise` (same values), elsewhere the module itself (export, hooks)."""
        conv = self.dw_conv
        if self.training and torch.is_grad_enabled() and not (conv._forward_hooks or conv._forward_pre_hooks):
            return depthwise_conv2d(x, conv.weight, conv.stride[0])
        return conv(x)


def build_stem(space: MBV3Space) -> tuple[ConvBNAct, MBConv]:
    """First 3x3 conv and the fixed expand-1, kernel-3 block shared by every sub-network."""
    w = space.widths
    stem = ConvBNAct(space.in_channels, w["stem"], 3, space.stem_stride, activation="hswish")
    first = MBConv(w["stem"], w["stem"], w["first_block"], 3, 1, "relu", None, expand=False)
    return stem, first


def build_head(space: MBV3Space, dropout: float) -> tuple[ConvBNAct, nn.Sequential, nn.Sequential]:
    """Final expand 1x1 conv, feature-mix 1x1 conv (after pooling) and the classifier."""
    w = space.widths
    final_expand = ConvBNAct(w["stages"][-1], w["final_expand"], 1, activation="hswish")
    feature_mix = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(w["final_expand"], w["feature_mix"], 1, bias=False),
            act=make_activation("hswish"),
        )
    )
    classifier = nn.Sequential(
        OrderedDict(dropout=nn.Dropout(dropout), linear=nn.Linear(w["feature_mix"], space.num_classes))
    )
    return final_expand, feature_mix, classifier


def block_specs(space: MBV3Space, arch: ArchConfig) -> list[dict]:
    """Constructor arguments of each active MBConv block of `arch`, in order."""
    specs = []
    in_ch = space.widths["first_block"]
    for stage, out_ch in enumerate(space.widths["stages"]):
        for j, (k, e) in enumerate(arch.stage_blocks(stage)):
            mid = middle_channels(in_ch, e)
            specs.append(
                dict(
                    in_channels=in_ch,
                    mid_channels=mid,
                    out_channels=out_ch,
                    kernel_size=k,
                    stride=space.stage_strides[stage] if j == 0 else 1,
                    activation=space.stage_activations[stage],
                    se_hidden=se_channels(mid, space.se_reduction) if space.stage_use_se[stage] else None,
                )
            )
            in_ch = out_ch
    return specs


class MobileNetV3(nn.Module):
    """A static sub-network of an OFA-MobileNetV3 space."""

    def __init__(self, space: MBV3Space, arch: ArchConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.space = space
        self.arch = space.validate(arch)
        self.stem, self.first_block = build_stem(space)
        self.blocks = nn.Sequential(*(MBConv(**spec) for spec in block_specs(space, arch)))
        self.final_expand, self.feature_mix, self.classifier = build_head(space, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.first_block(self.stem(x)))
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        return self.classifier(torch.flatten(self.feature_mix(x), 1))
