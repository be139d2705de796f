"""Analytic parameter and MAC counts of an OFA-MobileNetV3 sub-network, as OFA counts them.

MACs cover convolutions (including the two SE convolutions) and the classifier; BN and
activations are not counted. Parameters cover every weight, bias and BN affine pair of the
extracted static network. The side of a feature map is (h - 1) // stride + 1 after each
strided layer; SE, feature-mix and classifier act on 1x1 maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ofa.networks.mobilenet_v3 import block_specs
from ofa.space import ArchConfig, MBV3Space

STEM, HEAD = -1, -2  # `stage` of the layers outside the elastic stages


@dataclass(frozen=True)
class LayerCost:
    """One layer (or block) of a sub-network. `shape` identifies what the layer computes
    independently of where it sits (input side, widths, kernel, stride, ...): two layers with
    the same shape cost the same on a device, which is what a latency lookup table keys on."""

    name: str
    stage: int
    params: int
    macs: int
    shape: str


def _strided(side: int, stride: int) -> int:
    return (side - 1) // stride + 1


def _conv(
    cin: int, cout: int, k: int, side: int, groups: int = 1, bias: bool = False, bn: bool = True
) -> tuple[int, int]:
    """(params, MACs) of a conv with a `side` x `side` output map."""
    weights = cin // groups * cout * k * k
    params = weights + (cout if bias else 0) + (2 * cout if bn else 0)
    return params, weights * side * side


def _block_costs(space: MBV3Space, arch: ArchConfig, side: int) -> list[tuple[LayerCost, int]]:
    """The MBConv blocks' costs, each with the feature-map side after it."""
    out = []
    stage_of_block = [s for s in range(space.n_stages) for _ in range(arch.d[s])]
    for spec, stage in zip(block_specs(space, arch), stage_of_block):
        cin, mid, cout = spec["in_channels"], spec["mid_channels"], spec["out_channels"]
        out_side = _strided(side, spec["stride"])
        parts = [
            _conv(cin, mid, 1, side),
            _conv(mid, mid, spec["kernel_size"], out_side, groups=mid),
        ]
        if spec["se_hidden"]:
            hidden = spec["se_hidden"]
            parts += [_conv(mid, hidden, 1, 1, bias=True, bn=False), _conv(hidden, mid, 1, 1, bias=True, bn=False)]
        parts.append(_conv(mid, cout, 1, out_side))
        shape = (
            f"mbconv:in{side}:{cin}>{mid}>{cout}:k{spec['kernel_size']}:s{spec['stride']}"
            f":{spec['activation']}:se{spec['se_hidden'] or 0}"
        )
        out.append((LayerCost("block", stage, sum(p for p, _ in parts), sum(m for _, m in parts), shape), out_side))
        side = out_side
    return out


def layer_costs(space: MBV3Space, arch: ArchConfig) -> list[LayerCost]:
    """Per-layer costs of the sub-network `arch`, in execution order."""
    arch = space.validate(arch)
    w = space.widths
    costs: list[LayerCost] = []

    def add(name: str, stage: int, shape: str, *parts: tuple[int, int]) -> None:
        costs.append(LayerCost(name, stage, sum(p for p, _ in parts), sum(m for _, m in parts), shape))

    side = _strided(arch.r, space.stem_stride)
    add(
        "stem",
        STEM,
        f"stem:in{arch.r}:{space.in_channels}>{w['stem']}:s{space.stem_stride}",
        _conv(space.in_channels, w["stem"], 3, side),
    )
    add(
        "first_block",
        STEM,
        f"first_block:in{side}:{w['stem']}>{w['first_block']}",
        _conv(w["stem"], w["stem"], 3, side, groups=w["stem"]),
        _conv(w["stem"], w["first_block"], 1, side),
    )

    for i, (cost, out_side) in enumerate(_block_costs(space, arch, side)):
        costs.append(dataclasses.replace(cost, name=f"block{i}"))
        side = out_side

    add(
        "final_expand",
        HEAD,
        f"final_expand:in{side}:{w['stages'][-1]}>{w['final_expand']}",
        _conv(w["stages"][-1], w["final_expand"], 1, side),
    )
    add(
        "feature_mix",
        HEAD,
        f"feature_mix:{w['final_expand']}>{w['feature_mix']}",
        _conv(w["final_expand"], w["feature_mix"], 1, 1, bn=False),
    )
    add(
        "classifier",
        HEAD,
        f"classifier:{w['feature_mix']}>{space.num_classes}",
        _conv(w["feature_mix"], space.num_classes, 1, 1, bias=True, bn=False),
    )
    return costs


def count_params(space: MBV3Space, arch: ArchConfig) -> int:
    return sum(c.params for c in layer_costs(space, arch))


def count_macs(space: MBV3Space, arch: ArchConfig) -> int:
    return sum(c.macs for c in layer_costs(space, arch))
