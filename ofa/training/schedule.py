"""Training schedules as data: a list of phases, each with its own elastic dimensions and LR.

A phase restricts the space's choices (e.g. the elastic-kernel phase keeps expand and depth at
their maximum) and says which sub-networks each step trains: the phase's largest and smallest
when `sandwich` is set (BigNAS's sandwich rule), plus `random_subnets` drawn at random. A phase
whose space holds more than one architecture must draw random ones, else its middle is never
trained (refused by `Schedule.validate_against`). The learning rate is a pure
function of the position in the schedule (linear warm-up, then cosine to `min_lr` within each
phase), so a resumed run needs no scheduler state beyond the step it resumes at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ofa.errors import check_int
from ofa.space import MBV3Space

ARCH_FIELDS = ("kernel_sizes", "expand_ratios", "depths")  # what makes sub-networks differ
ELASTIC_FIELDS = (*ARCH_FIELDS, "resolutions")


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    kernel_sizes: tuple[int, ...] | None = None  # None: every choice of the space
    expand_ratios: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    resolutions: tuple[int, ...] | None = None
    sandwich: bool = False  # each step trains the phase's largest and smallest ...
    random_subnets: int = 0  # ... and this many random sub-networks (none of either: the largest)
    reorganize: int | None = None  # channel re-organisation (expand stage) when the phase starts
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    kd_ratio: float | None = None  # None: the schedule's default
    subnet_loss_ramp_epochs: float = 0.0  # DEPS: weight of non-largest sub-networks rises 0 -> 1

    def __post_init__(self) -> None:
        for key, kind in (("epochs", int), ("random_subnets", int), ("lr", float), ("warmup_epochs", float)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"phase {self.name!r}: {key} = {value!r} is not allowed; it must be {what}")
        if self.epochs < 1:
            raise ValueError(f"phase {self.name!r}: epochs = {self.epochs} must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"phase {self.name!r}: lr = {self.lr} must be positive")
        if self.random_subnets < 0:
            raise ValueError(f"phase {self.name!r}: random_subnets = {self.random_subnets} must be 0 or more")
        for name in ELASTIC_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    def space(self, space: MBV3Space) -> MBV3Space:
        """The space restricted to this phase's choices (what its sampler draws from)."""
        changes = {}
        for name in ELASTIC_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            allowed = getattr(space, name)
            bad = [v for v in value if v not in allowed]
            if bad:
                raise ValueError(
                    f"phase {self.name!r}: {name} = {list(value)} has {bad}, not in the space; "
                    f"allowed: {', '.join(map(str, allowed))}"
                )
            changes[name] = value
        return space.with_(**changes) if changes else space

    @property
    def step_summary(self) -> str:
        """What each step trains, in words (printed when the phase starts)."""
        parts = (["largest", "smallest"] if self.sandwich else []) + (
            [f"{self.random_subnets} random"] if self.random_subnets else []
        )
        return " + ".join(parts) or "largest"

    def check_trains_middle(self, space: MBV3Space) -> None:
        """Refuse a phase whose architectures vary but which draws no random sub-network: its
        steps would train the corners only, and every sub-network between them stays untrained."""
        varying = [n for n in ARCH_FIELDS if len(getattr(self.space(space), n)) > 1]
        if varying and self.random_subnets < 1:
            raise ValueError(
                f"phase {self.name!r}: random_subnets = {self.random_subnets} while {', '.join(varying)} vary; "
                "allowed: random_subnets >= 1 in an elastic phase (the shipped schedules: sandwich: true, "
                "random_subnets: 2)"
            )


@dataclass(frozen=True)
class Schedule:
    name: str
    phases: tuple[Phase, ...]
    kd_ratio: float = 1.0
    kd_temperature: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"schedule {self.name!r} has no phases")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], epochs_per_phase: int | None = None) -> Schedule:
        """From a `conf/schedule/*.yaml` mapping. `phases` maps phase name -> fields (in order;
        a list of phases with `name` fields works too). `epochs_per_phase` overrides every
        phase's epochs (smoke runs). Other top-level keys are kept in `extra`."""
        raw = cfg.get("phases") or {}
        items = list(raw.items()) if isinstance(raw, Mapping) else [(p.get("name"), p) for p in raw]
        known = {f.name for f in fields(Phase)}
        phases = []
        for i, (name, p) in enumerate(items):
            p = dict(p or {})
            unknown = sorted(set(p) - known)
            if "subnets_per_step" in unknown:
                raise ValueError(
                    f"phase {i} ({name}): subnets_per_step was replaced by sandwich (the largest and the "
                    "smallest) + random_subnets (how many random ones), e.g. sandwich: true, random_subnets: 2"
                )
            if unknown:
                raise ValueError(
                    f"phase {i} ({name}): unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
                )
            p["name"] = str(p.get("name") or name)
            if epochs_per_phase is not None:
                check_int("epochs_per_phase", epochs_per_phase, 1, none_ok=True)
                p["epochs"] = epochs_per_phase
            phases.append(Phase(**p))
        core = {"name", "phases", "kd_ratio", "kd_temperature"}
        return cls(
            name=str(cfg.get("name", "custom")),
            phases=tuple(phases),
            kd_ratio=float(cfg.get("kd_ratio", 1.0)),
            kd_temperature=float(cfg.get("kd_temperature", 1.0)),
            extra={k: v for k, v in cfg.items() if k not in core},
        )

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def start_epoch(self, index: int) -> int:
        return sum(p.epochs for p in self.phases[:index])

    def phase_index(self, epoch: int) -> int:
        """Index of the phase that trains `epoch` (0-based); the last phase past the end."""
        for i in range(len(self.phases)):
            if epoch < self.start_epoch(i + 1):
                return i
        return len(self.phases) - 1

    def lr(self, index: int, epochs_into_phase: float) -> float:
        """Learning rate `epochs_into_phase` (fractional) epochs after phase `index` started."""
        p = self.phases[index]
        if epochs_into_phase < p.warmup_epochs:
            return p.lr * (epochs_into_phase + 1e-3) / p.warmup_epochs
        span = max(p.epochs - p.warmup_epochs, 1e-9)
        t = min(max((epochs_into_phase - p.warmup_epochs) / span, 0.0), 1.0)
        return p.min_lr + 0.5 * (p.lr - p.min_lr) * (1.0 + math.cos(math.pi * t))

    def kd_ratio_of(self, index: int) -> float:
        p = self.phases[index]
        return self.kd_ratio if p.kd_ratio is None else p.kd_ratio

    def validate_against(self, space: MBV3Space) -> None:
        """Every phase's choices lie in `space`, and every elastic phase trains random sub-networks."""
        for p in self.phases:
            p.check_trains_middle(space)

    def describe(self) -> list[dict[str, Any]]:
        return [{f.name: getattr(p, f.name) for f in fields(Phase)} for p in self.phases]
