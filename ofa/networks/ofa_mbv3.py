"""The elastic OFA-MobileNetV3 supernet: set, sample and extract sub-networks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ofa.elastic import DynamicBatchNorm2d, DynamicMBConv
from ofa.networks import costs
from ofa.networks.mobilenet_v3 import MBConv, MobileNetV3, build_head, build_stem
from ofa.space import ArchConfig, MBV3Space, get_space


class OFAMobileNetV3(nn.Module):
    """Supernet over an `MBV3Space`: elastic kernel, expand ratio, depth (and resolution,
    which is the input's). Keyword arguments not given take the reference values of the
    OFA-MobileNetV3 space; `space=` passes a whole space instead.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        dropout: float = 0.1,
        space: MBV3Space | None = None,
        zero_init_residual: bool = False,
        **space_fields: Any,
    ) -> None:
        super().__init__()
        if space is None:
            space = MBV3Space(
                width_mult=width_mult, num_classes=num_classes, in_channels=in_channels, **_as_tuples(space_fields)
            )
        elif space_fields:
            raise ValueError(f"pass either space= or space fields, not both (got {sorted(space_fields)})")
        self.space = space
        self.dropout = dropout
        w = space.widths
        self.stem, self.first_block = build_stem(space)
        blocks = []
        in_ch = w["first_block"]
        for stage, out_ch in enumerate(w["stages"]):
            for j in range(space.max_depth):
                blocks.append(
                    DynamicMBConv(
                        in_ch,
                        out_ch,
                        space.kernel_sizes,
                        space.expand_ratios,
                        stride=space.stage_strides[stage] if j == 0 else 1,
                        activation=space.stage_activations[stage],
                        use_se=space.stage_use_se[stage],
                        se_reduction=space.se_reduction,
                    )
                )
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final_expand, self.feature_mix, self.classifier = build_head(space, dropout)
        self.active_depths = [space.max_depth] * space.n_stages
        self.active_arch = space.largest()
        self.zero_init_residual = zero_init_residual
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """OFA's initialisation: convs He-normal over fan-out, BN (1, 0), linear uniform with
        zero bias; kernel-transform matrices stay identity. With `zero_init_residual` (BigNAS,
        as torchvision's ResNet) the last BN of every residual block starts at scale 0, so each
        such block starts as the identity: a sub-network of any depth starts as the same
        function as its shallower neighbours."""
        for module in self.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.weight.shape[1] ** 0.5
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)
            elif isinstance(weight, nn.Parameter) and weight.dim() == 4:  # static or elastic conv
                fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
                nn.init.normal_(weight, 0.0, (2.0 / fan_out) ** 0.5)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.zero_init_residual:
            for block in (self.first_block, *self.blocks):  # the first block has a shortcut too
                if block.use_residual:
                    nn.init.zeros_(block.project_bn.weight)

    @classmethod
    def from_preset(
        cls, preset: str, dropout: float = 0.1, zero_init_residual: bool = False, **overrides: Any
    ) -> OFAMobileNetV3:
        """Supernet of a named space in `ofa.space.SPACES`, any space field overridden."""
        space = get_space(preset)
        if overrides:
            space = space.with_(**_as_tuples(overrides))
        return cls(space=space, dropout=dropout, zero_init_residual=zero_init_residual)

    # --- the contract ------------------------------------------------------------------
    def set_active_subnet(self, arch: ArchConfig | Mapping[str, Any]) -> ArchConfig:
        """Make `arch` the sub-network that `forward` runs; returns it validated."""
        arch = self.space.parse(arch)
        for slot, block in enumerate(self.blocks):
            if arch.ks[slot]:  # skipped slots keep their state; they do not run
                block.set_active(arch.ks[slot], arch.e[slot])
        self.active_depths = list(arch.d)
        self.active_arch = arch
        return arch

    def sample_active_subnet(self, generator: torch.Generator) -> ArchConfig:
        """Draw a random sub-network from `generator` and make it active."""
        return self.set_active_subnet(self.space.sample(generator))

    def set_max_subnet(self) -> ArchConfig:
        return self.set_active_subnet(self.space.largest())

    def set_min_subnet(self) -> ArchConfig:
        return self.set_active_subnet(self.space.smallest())

    def extract_subnet(self, arch: ArchConfig | Mapping[str, Any] | None = None) -> MobileNetV3:
        """A static `MobileNetV3` computing what the supernet computes for `arch` (default:
        the active one), with its weights and BN statistics copied."""
        arch = self.active_arch if arch is None else self.space.parse(arch)
        net = MobileNetV3(self.space, arch, self.dropout)
        for name in ("stem", "first_block", "final_expand", "feature_mix", "classifier"):
            getattr(net, name).load_state_dict(getattr(self, name).state_dict())
        for static, slot in zip(net.blocks, arch.active_slots()):
            _copy_block(self.blocks[slot], static, arch.ks[slot])
        return net.train(self.training)

    def count_params(self, arch: ArchConfig | Mapping[str, Any] | None = None) -> int:
        return costs.count_params(self.space, self.active_arch if arch is None else self.space.parse(arch))

    def count_macs(self, arch: ArchConfig | Mapping[str, Any] | None = None) -> int:
        return costs.count_macs(self.space, self.active_arch if arch is None else self.space.parse(arch))

    # --- helpers -------------------------------------------------------------------------
    def stage_slots(self, stage: int) -> range:
        start = stage * self.space.max_depth
        return range(start, start + self.space.max_depth)

    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort every block's middle channels by importance (see DynamicMBConv)."""
        for block in self.blocks:
            block.reorganize_channels(expand_stage)

    def dynamic_batchnorms(self) -> list[DynamicBatchNorm2d]:
        return [m for m in self.modules() if isinstance(m, DynamicBatchNorm2d)]

    def forward(self, x: Tensor) -> Tensor:
        x = self.first_block(self.stem(x))
        for stage, depth in enumerate(self.active_depths):
            for slot in self.stage_slots(stage)[:depth]:
                x = self.blocks[slot](x)
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        return self.classifier(torch.flatten(self.feature_mix(x), 1))


def _as_tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """Hydra passes lists (ListConfig); the space wants tuples."""
    return {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in fields.items()}


@torch.no_grad()
def _copy_block(dyn: DynamicMBConv, block: MBConv, kernel_size: int) -> None:
    """Copy the active slices of `dyn` (its middle width read off `block`) into `block`."""
    mid = block.dw_conv.weight.shape[0]
    in_ch = dyn.in_channels
    block.expand_conv.weight.copy_(dyn.expand_conv.active_weight(in_ch, mid))
    _copy_bn(dyn.expand_bn, block.expand_bn, mid)
    block.dw_conv.weight.copy_(dyn.dw_conv.active_filter(mid, kernel_size))
    _copy_bn(dyn.dw_bn, block.dw_bn, mid)
    if block.se is not None:
        hidden = block.se.reduce.weight.shape[0]
        block.se.reduce.weight.copy_(dyn.se.reduce.active_weight(mid, hidden))
        block.se.reduce.bias.copy_(dyn.se.reduce.active_bias(hidden))
        block.se.expand.weight.copy_(dyn.se.expand.active_weight(hidden, mid))
        block.se.expand.bias.copy_(dyn.se.expand.active_bias(mid))
    block.project_conv.weight.copy_(dyn.project_conv.active_weight(mid, dyn.out_channels))
    _copy_bn(dyn.project_bn, block.project_bn, dyn.out_channels)


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.momentum, dst.eps = src.momentum, src.eps
