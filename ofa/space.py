"""The OFA-MobileNetV3 search space (`ArchConfig`, re-exported here, lives in `ofa.arch`).

`MBV3Space` describes the elastic network (widths, strides, activations, SE placement and
the elastic choices). It validates configs, samples them, counts them and has a stable
fingerprint that every artifact records.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from ofa.arch import ARCH_FIELDS, SKIPPED, ArchConfig  # noqa: F401  (re-exported: ofa.space.ArchConfig)

ACTIVATIONS = ("relu", "hswish")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below 90% of it (as OFA/TF do)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Width of the expanded (middle) features of an MBConv block, as OFA rounds it."""
    return make_divisible(round(in_channels * expand_ratio), 8)


def se_channels(channels: int, reduction: int = 4) -> int:
    """Hidden width of the squeeze-and-excite over `channels` middle channels."""
    return make_divisible(channels // reduction, 8)


def _check_choices(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if not values:
        raise ValueError(f"{name} is empty; it needs at least one choice")
    if any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{name} = {list(values)} must hold distinct positive integers")
    return tuple(sorted(values))


@dataclass(frozen=True)
class MBV3Space:
    """Description of an OFA-MobileNetV3 supernet and its elastic choices.

    Widths are the reference widths before the width multiplier (scaled with
    `make_divisible(w * width_mult, 8)`). Strides and the resolution set are configurable so
    that small inputs (28-32 px) keep a useful feature map down to the last stage.
    """

    width_mult: float = 1.0
    in_channels: int = 3
    num_classes: int = 1000
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    stem_stride: int = 2
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stem_width: int = 16
    first_block_width: int = 16
    stage_widths: tuple[int, ...] = (24, 40, 80, 112, 160)
    final_expand_width: int = 960
    feature_mix_width: int = 1280
    stage_activations: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    stage_use_se: tuple[bool, ...] = (False, True, False, True, True)
    se_reduction: int = 4
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        set_("kernel_sizes", _check_choices("kernel_sizes", self.kernel_sizes))
        set_("expand_ratios", _check_choices("expand_ratios", self.expand_ratios))
        set_("depths", _check_choices("depths", self.depths))
        set_("resolutions", _check_choices("resolutions", self.resolutions))
        set_("stage_strides", tuple(int(s) for s in self.stage_strides))
        set_("stage_widths", tuple(int(w) for w in self.stage_widths))
        set_("stage_activations", tuple(str(a) for a in self.stage_activations))
        set_("stage_use_se", tuple(bool(s) for s in self.stage_use_se))
        set_("width_mult", float(self.width_mult))
        n = len(self.stage_widths)
        for name in ("stage_strides", "stage_activations", "stage_use_se"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values; stage_widths has {n} stages")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes = {list(self.kernel_sizes)} must be odd")
        for i, act in enumerate(self.stage_activations):
            if act not in ACTIVATIONS:
                raise ValueError(f"stage_activations[{i}] = {act!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride = {self.stem_stride} is not allowed; allowed: 1, 2")
        for i, s in enumerate(self.stage_strides):
            if s not in (1, 2):
                raise ValueError(f"stage_strides[{i}] = {s} is not allowed; allowed: 1, 2")
        if self.width_mult <= 0:
            raise ValueError(f"width_mult = {self.width_mult} must be positive")
        for name in ("in_channels", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be at least 1")

    # --- derived widths ------------------------------------------------------------
    def scaled(self, width: int) -> int:
        return make_divisible(width * self.width_mult, 8)

    @property
    def n_stages(self) -> int:
        return len(self.stage_widths)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def n_slots(self) -> int:
        return self.n_stages * self.max_depth

    @property
    def widths(self) -> dict[str, Any]:
        """Channel widths after the width multiplier."""
        return {
            "stem": self.scaled(self.stem_width),
            "first_block": self.scaled(self.first_block_width),
            "stages": [self.scaled(w) for w in self.stage_widths],
            "final_expand": self.scaled(self.final_expand_width),
            "feature_mix": self.scaled(self.feature_mix_width),
        }

    def describe(self) -> dict[str, Any]:
        """Everything that determines the network's structure (the fingerprint's input)."""
        desc = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        desc = json.loads(json.dumps(desc))  # tuples -> lists, one canonical form
        desc["family"] = "ofa-mbv3"
        desc["scaled_widths"] = self.widths
        return desc

    def fingerprint(self) -> str:
        """A stable hash of the space's description; artifacts record and check it."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MBV3Space:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown space field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def with_(self, **changes: Any) -> MBV3Space:
        return replace(self, **changes)

    # --- configs -------------------------------------------------------------------
    def validate(self, arch: ArchConfig) -> ArchConfig:
        """Raise a ValueError naming the field, the bad value and the allowed values."""
        if not isinstance(arch, ArchConfig):
            raise ValueError(f"expected an ArchConfig, got {type(arch).__name__}")
        if len(arch.d) != self.n_stages:
            raise ValueError(f"d has {len(arch.d)} values; this space needs {self.n_stages} (one per stage)")
        if len(arch.ks) != self.n_slots:
            raise ValueError(
                f"ks and e have {len(arch.ks)} values; this space needs {self.n_slots} "
                f"({self.max_depth} block slots x {self.n_stages} stages)"
            )
        allowed = lambda vals: ", ".join(map(str, vals))  # noqa: E731
        for i, depth in enumerate(arch.d):
            if depth not in self.depths:
                raise ValueError(f"d[{i}] = {depth} is not allowed; allowed: {allowed(self.depths)}")
        active = set(arch.active_slots())
        for name, choices in (("ks", self.kernel_sizes), ("e", self.expand_ratios)):
            for i, v in enumerate(getattr(arch, name)):
                if i in active and v not in choices:
                    raise ValueError(f"{name}[{i}] = {v} is not allowed; allowed: {allowed(choices)}")
        if arch.r not in self.resolutions:
            raise ValueError(f"r = {arch.r} is not allowed; allowed: {allowed(self.resolutions)}")
        return arch

    def parse(self, data: Mapping[str, Any] | ArchConfig) -> ArchConfig:
        """A validated ArchConfig from a dict, a CSV row or an ArchConfig."""
        arch = data if isinstance(data, ArchConfig) else ArchConfig.from_csv_fields(data)
        return self.validate(arch)

    def uniform(self, ks: int, e: int, d: int, r: int) -> ArchConfig:
        return self.validate(ArchConfig(ks=(ks,) * self.n_slots, e=(e,) * self.n_slots, d=(d,) * self.n_stages, r=r))

    def smallest(self, r: int | None = None) -> ArchConfig:
        return self.uniform(
            min(self.kernel_sizes), min(self.expand_ratios), min(self.depths), min(self.resolutions) if r is None else r
        )

    def largest(self, r: int | None = None) -> ArchConfig:
        return self.uniform(
            max(self.kernel_sizes), max(self.expand_ratios), max(self.depths), max(self.resolutions) if r is None else r
        )

    def sample(self, generator: torch.Generator, r: int | None = None) -> ArchConfig:
        """A uniformly random config (each choice independent), drawn from `generator`."""

        def pick(choices: tuple[int, ...], n: int) -> list[int]:
            idx = torch.randint(len(choices), (n,), generator=generator).tolist()
            return [choices[i] for i in idx]

        ks = pick(self.kernel_sizes, self.n_slots)
        e = pick(self.expand_ratios, self.n_slots)
        d = pick(self.depths, self.n_stages)
        res = pick(self.resolutions, 1)[0]
        return ArchConfig(ks=ks, e=e, d=d, r=res if r is None else r)

    def count_subnets(self, with_resolution: bool = True) -> int:
        """Number of distinct sub-networks (canonical configs) in the space."""
        per_block = len(self.kernel_sizes) * len(self.expand_ratios)
        per_stage = sum(per_block**depth for depth in self.depths)
        total = per_stage**self.n_stages
        return total * len(self.resolutions) if with_resolution else total

    def log10_size(self) -> float:
        return math.log10(self.count_subnets())


# Named spaces (timm-style registry). The `ofa_mbv3_*` small-input presets keep the reference
# widths and a 4x4 map at the last stage of a 28 px input (stem stride 1, no stride in stage 1).
# `mnist` is the embedded default: narrow enough to train in minutes on 2 CPU cores, and small
# enough at its smallest (about 15x fewer MACs than its largest) that accuracy has something to trade.
# Its resolutions are multiples of its total stride (8): with 20/24/28 the odd 28 px maps (7 -> 4)
# made r28 less accurate than r24, so accuracy did not follow MACs (bench/accuracy_by_resolution.py).
SPACES: dict[str, MBV3Space] = {
    "ofa_mbv3_w10": MBV3Space(name="ofa_mbv3_w10"),
    "ofa_mbv3_w12": MBV3Space(width_mult=1.2, name="ofa_mbv3_w12"),
    "ofa_mbv3_cifar": MBV3Space(
        num_classes=10,
        resolutions=(24, 28, 32),
        stem_stride=1,
        stage_strides=(1, 2, 2, 1, 2),
        name="ofa_mbv3_cifar",
    ),
    "ofa_mbv3_mnist": MBV3Space(
        in_channels=1,
        num_classes=10,
        resolutions=(20, 24, 28),
        stem_stride=1,
        stage_strides=(1, 2, 2, 1, 2),
        name="ofa_mbv3_mnist",
    ),
    "mnist": MBV3Space(
        in_channels=1,
        num_classes=10,
        resolutions=(16, 24, 32),
        stem_stride=2,
        stage_strides=(1, 2, 1, 2, 1),
        stem_width=8,
        first_block_width=8,
        stage_widths=(16, 24, 40, 48, 64),
        final_expand_width=256,
        feature_mix_width=512,
        name="mnist",
    ),
}


def get_space(name: str) -> MBV3Space:
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; known: {', '.join(sorted(SPACES))}")
    return SPACES[name]
