"""`ArchConfig`, the one currency of the project: per block slot a kernel size (`ks`) and an
expand ratio (`e`), per stage a depth (`d`), and the input resolution (`r`).

It is immutable, hashable and canonical: the values of block slots a stage skips are set to 0,
so two encodings of one sub-network compare and hash equal. It round-trips through JSON, the
`ks,e,d,r` CSV columns of every table and the compact `key()` string (`from_key`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ofa.space import MBV3Space

ARCH_FIELDS = ("ks", "e", "d", "r")
SKIPPED = 0  # the canonical value of a block slot that its stage's depth skips


def _as_int(field_name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{field_name} = {value!r} is not an integer")
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} = {value!r} is not an integer") from None
    if as_int != value and not (isinstance(value, str) and value.strip() == str(as_int)):
        raise ValueError(f"{field_name} = {value!r} is not an integer")
    return as_int


def _as_int_tuple(field_name: str, value: Any) -> tuple[int, ...]:
    """Accept a sequence of integers or the dash-joined CSV form ("7-5-3")."""
    if isinstance(value, str):
        parts = value.strip().split("-") if value.strip() else []
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        raise ValueError(f"{field_name} = {value!r} is not a list of integers or a dash-joined string")
    return tuple(_as_int(f"{field_name}[{i}]", v) for i, v in enumerate(parts))


_KEY_PATTERN = re.compile(r"ks([\d-]+)_e([\d-]+)_d([\d-]+)_r(\d+)")


@dataclass(frozen=True)
class ArchConfig:
    """One sub-network: `ks`, `e` per block slot, `d` per stage, resolution `r`.

    The number of slots per stage is `len(ks) // len(d)`. Construction checks the structure
    and canonicalises skipped slots; `MBV3Space.validate` checks the values against a space.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        ks = _as_int_tuple("ks", self.ks)
        e = _as_int_tuple("e", self.e)
        d = _as_int_tuple("d", self.d)
        r = _as_int("r", self.r)
        if not d:
            raise ValueError("d is empty; it needs one depth per stage")
        if len(ks) != len(e):
            raise ValueError(f"ks has {len(ks)} values but e has {len(e)}; both need one per block slot")
        if len(ks) % len(d):
            raise ValueError(f"ks has {len(ks)} values, not a multiple of the {len(d)} stages in d")
        slots = len(ks) // len(d)
        for i, depth in enumerate(d):
            if not 1 <= depth <= slots:
                raise ValueError(f"d[{i}] = {depth} is not allowed; a stage has 1..{slots} block slots")
        if r <= 0:
            raise ValueError(f"r = {r} is not allowed; the resolution must be positive")
        active = [j < depth for depth in d for j in range(slots)]
        object.__setattr__(self, "ks", tuple(k if a else SKIPPED for k, a in zip(ks, active)))
        object.__setattr__(self, "e", tuple(x if a else SKIPPED for x, a in zip(e, active)))
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "r", r)

    # --- structure -------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        return len(self.d)

    @property
    def slots_per_stage(self) -> int:
        return len(self.ks) // len(self.d)

    def active_slots(self) -> list[int]:
        """Indices of the block slots this sub-network runs, in order."""
        s = self.slots_per_stage
        return [stage * s + j for stage, depth in enumerate(self.d) for j in range(depth)]

    def stage_blocks(self, stage: int) -> list[tuple[int, int]]:
        """(kernel, expand) of the active blocks of one stage."""
        start = stage * self.slots_per_stage
        return [(self.ks[start + j], self.e[start + j]) for j in range(self.d[stage])]

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], space: MBV3Space | None = None) -> ArchConfig:
        """Build from `{'ks': [...], 'e': [...], 'd': [...], 'r': 224}` (lists or dash-joined
        strings); validated against `space` when given. Extra keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an arch config must be a mapping with keys {ARCH_FIELDS}, got {type(data).__name__}")
        missing = [k for k in ARCH_FIELDS if k not in data]
        extra = [k for k in data if k not in ARCH_FIELDS]
        if missing or extra:
            raise ValueError(
                f"arch config keys must be exactly {', '.join(ARCH_FIELDS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(map(str, extra))}" if extra else "")
            )
        arch = cls(ks=data["ks"], e=data["e"], d=data["d"], r=data["r"])
        if space is not None:
            space.validate(arch)
        return arch

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, space: MBV3Space | None = None) -> ArchConfig:
        return cls.from_dict(json.loads(text), space)

    def to_csv_fields(self) -> dict[str, str]:
        """The CSV form used by every table: dash-joined integers per column."""
        return {
            "ks": "-".join(map(str, self.ks)),
            "e": "-".join(map(str, self.e)),
            "d": "-".join(map(str, self.d)),
            "r": str(self.r),
        }

    @classmethod
    def from_csv_fields(cls, row: Mapping[str, Any], space: MBV3Space | None = None) -> ArchConfig:
        """Parse the `ks,e,d,r` columns of a table row (other columns are ignored)."""
        return cls.from_dict({k: row[k] for k in ARCH_FIELDS if k in row}, space)

    def key(self) -> str:
        """A compact, canonical string: one sub-network, one key (file names, dict keys)."""
        f = self.to_csv_fields()
        return f"ks{f['ks']}_e{f['e']}_d{f['d']}_r{f['r']}"

    @classmethod
    def from_key(cls, text: str, space: MBV3Space | None = None) -> ArchConfig:
        """The inverse of `key()`: `ks7-5-3_e3-4-6_d2-3_r224` -> ArchConfig (validated against `space`)."""
        match = _KEY_PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"arch key = {text!r} is not of the form ks<k-k-...>_e<e-e-...>_d<d-d-...>_r<resolution>")
        return cls.from_dict(dict(zip(ARCH_FIELDS, match.groups())), space)

    def __str__(self) -> str:
        f = self.to_csv_fields()
        return f"ArchConfig(ks={f['ks']}, e={f['e']}, d={f['d']}, r={f['r']})"
