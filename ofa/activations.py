"""Activation modules by name, shared by the static and the elastic networks."""

from __future__ import annotations

from torch import nn


def make_activation(name: str) -> nn.Module:
    """`relu` or `hswish` (x * relu6(x + 3) / 6, as MobileNetV3)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation {name!r} is not allowed; allowed: relu, hswish")
