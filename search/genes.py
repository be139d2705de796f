"""Search spaces as fixed-length vectors of named categorical genes, mapped to and from configs.

A `GeneSpace` is what the search engine sees: `n` genes, each a name and a tuple of choices
(Optuna categorical parameters), and a mapping between a row of choice indices and the
config the objectives take (an `ArchConfig`, a NAS-Bench-201 cell string, ...). Several
gene vectors may map to one config (an MBV3 stage's skipped slots): `canonical` rewrites
index rows so that one config has one row, and the engine deduplicates on that row.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ofa.space import ArchConfig, MBV3Space

Choice = int | str


@dataclass(frozen=True)
class Gene:
    """One categorical decision: Optuna parameter `name` with the allowed `choices`."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 1 or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"gene {self.name!r} needs distinct choices, got {list(self.choices)}")


class GeneSpace(ABC):
    """Fixed-length categorical encoding of a search space (the engine's only view of it)."""

    name: str
    genes: tuple[Gene, ...]

    # --- the mapping a space defines -------------------------------------------------
    @abstractmethod
    def decode(self, row: Sequence[int]) -> Any:
        """The config of one row of choice indices."""

    @abstractmethod
    def encode(self, config: Any) -> np.ndarray:
        """The canonical row of choice indices of a config (validated)."""

    @abstractmethod
    def key(self, config: Any) -> str:
        """A canonical string: one config, one key (stored with every trial)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What determines the space (the fingerprint's input)."""

    def parse(self, text: str) -> Any:
        """A config from its key (the inverse of `key`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot parse keys")

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """Rows rewritten so that rows of one config are equal (identity by default)."""
        return np.asarray(rows, dtype=np.int64)

    def default_seeds(self) -> list[Any]:
        """Configs worth evaluating first (the space's smallest and largest)."""
        return []

    # --- derived ---------------------------------------------------------------------
    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(g.choices) for g in self.genes], dtype=np.int64)

    def fingerprint(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def size(self) -> int:
        """Number of gene vectors (not of distinct configs)."""
        return int(np.prod(self.cardinalities.astype(object)))

    def n_configs(self) -> int:
        """Number of distinct configs (canonical rows)."""
        return self.size()

    def params(self, row: Sequence[int]) -> dict[str, Choice]:
        """Optuna parameters of a row."""
        return {g.name: g.choices[int(i)] for g, i in zip(self.genes, row)}

    def row_from_params(self, params: Mapping[str, Any]) -> np.ndarray:
        """Row of choice indices from Optuna parameters (a clear error on a bad value)."""
        row = np.empty(self.n_genes, dtype=np.int64)
        for j, g in enumerate(self.genes):
            if g.name not in params:
                raise ValueError(f"parameter {g.name!r} is missing; this space has genes {self.gene_names()}")
            try:
                row[j] = g.choices.index(params[g.name])
            except ValueError:
                raise ValueError(
                    f"{g.name} = {params[g.name]!r} is not allowed; allowed: {', '.join(map(str, g.choices))}"
                ) from None
        return row

    def gene_names(self) -> str:
        names = [g.name for g in self.genes]
        return ", ".join(names) if len(names) <= 8 else ", ".join(names[:8]) + f", ... ({len(names)} genes)"

    def random_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.canonical(rng.integers(0, self.cardinalities, size=(n, self.n_genes)))

    def neighbours(self, row: np.ndarray) -> np.ndarray:
        """Canonical rows one gene away from `row` (distinct, excluding `row` itself)."""
        row = np.asarray(row, dtype=np.int64)
        out = []
        for j, card in enumerate(self.cardinalities):
            for c in range(card):
                if c != row[j]:
                    n = row.copy()
                    n[j] = c
                    out.append(n)
        if not out:
            return np.empty((0, self.n_genes), dtype=np.int64)
        rows = self.canonical(np.stack(out))
        rows = np.unique(rows, axis=0)
        return rows[(rows != self.canonical(row[None])[0]).any(axis=1)]


# --- OFA-MobileNetV3 ------------------------------------------------------------------


class MBV3Genes(GeneSpace):
    """`ks<i>` and `e<i>` per block slot, `d<s>` per stage, `r`; decodes to `ArchConfig`.

    Skipped slots decode to the canonical 0 of `ArchConfig`; their genes are canonicalised to
    the first choice, so every sub-network has exactly one canonical row.
    """

    def __init__(self, space: MBV3Space) -> None:
        self.space = space
        self.name = f"mbv3:{space.name}"
        n, s = space.n_slots, space.n_stages
        self.genes = (
            *(Gene(f"ks{i}", space.kernel_sizes) for i in range(n)),
            *(Gene(f"e{i}", space.expand_ratios) for i in range(n)),
            *(Gene(f"d{i}", space.depths) for i in range(s)),
            Gene("r", space.resolutions),
        )
        self._n, self._s = n, s
        slots = space.max_depth
        # active[d_index, slot_in_stage]: whether a stage of depth depths[d_index] runs that slot
        self._active = np.array([[j < d for j in range(slots)] for d in space.depths])

    def describe(self) -> dict[str, Any]:
        return {"family": "mbv3-genes", "space": self.space.describe()}

    def fingerprint(self) -> str:
        # The space's own fingerprint: artifacts of the supernet and of the search agree.
        return self.space.fingerprint()

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        rows = np.array(rows, dtype=np.int64, copy=True)
        n, s = self._n, self._s
        d_idx = rows[:, 2 * n : 2 * n + s]  # (m, stages)
        active = self._active[d_idx].reshape(rows.shape[0], n)  # (m, slots)
        rows[:, :n] = np.where(active, rows[:, :n], 0)
        rows[:, n : 2 * n] = np.where(active, rows[:, n : 2 * n], 0)
        return rows

    def decode(self, row: Sequence[int]) -> ArchConfig:
        row = [int(i) for i in row]
        n, s, sp = self._n, self._s, self.space
        return ArchConfig(
            ks=[sp.kernel_sizes[i] for i in row[:n]],
            e=[sp.expand_ratios[i] for i in row[n : 2 * n]],
            d=[sp.depths[i] for i in row[2 * n : 2 * n + s]],
            r=sp.resolutions[row[2 * n + s]],
        )

    def encode(self, config: ArchConfig | Mapping[str, Any]) -> np.ndarray:
        arch = self.space.parse(config) if not isinstance(config, ArchConfig) else self.space.validate(config)
        sp = self.space
        active = set(arch.active_slots())
        row = [sp.kernel_sizes.index(k) if i in active else 0 for i, k in enumerate(arch.ks)]
        row += [sp.expand_ratios.index(x) if i in active else 0 for i, x in enumerate(arch.e)]
        row += [sp.depths.index(d) for d in arch.d]
        row.append(sp.resolutions.index(arch.r))
        return np.array(row, dtype=np.int64)

    def key(self, config: ArchConfig) -> str:
        return config.key()

    def parse(self, text: str) -> ArchConfig:
        return ArchConfig.from_key(text, self.space)

    def default_seeds(self) -> list[ArchConfig]:
        return [self.space.smallest(), self.space.largest()]

    def n_configs(self) -> int:
        return self.space.count_subnets()


# --- NAS-Bench-201 --------------------------------------------------------------------

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edges (to, from) in the order the cell string lists them: |a~0|+|b~0|c~1|+|d~0|e~1|f~2|
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_NB201_TOKEN = re.compile(r"\|([a-z0-9_]+)~(\d)")


class NB201Genes(GeneSpace):
    """NAS-Bench-201: one gene per cell edge (`n<to><-<from>`), five operations each; decodes
    to the cell string exactly as NAS-Bench-201 writes it."""

    def __init__(self, ops: Sequence[str] = NB201_OPS) -> None:
        self.ops = tuple(ops)
        self.name = "nb201"
        self.genes = tuple(Gene(f"n{to}<-{frm}", self.ops) for to, frm in NB201_EDGES)

    def describe(self) -> dict[str, Any]:
        return {"family": "nas-bench-201", "ops": list(self.ops), "edges": [list(e) for e in NB201_EDGES]}

    def decode(self, row: Sequence[int]) -> str:
        ops = [self.ops[int(i)] for i in row]
        nodes, k = [], 0
        for to in (1, 2, 3):
            nodes.append("|" + "|".join(f"{ops[k + frm]}~{frm}" for frm in range(to)) + "|")
            k += to
        return "+".join(nodes)

    def encode(self, config: str) -> np.ndarray:
        return self.row_of(config)

    def row_of(self, cell: str) -> np.ndarray:
        if not isinstance(cell, str):
            raise ValueError(f"a NAS-Bench-201 cell must be a string, got {type(cell).__name__}")
        tokens = _NB201_TOKEN.findall(cell)
        expected = [frm for _, frm in NB201_EDGES]
        if len(tokens) != len(NB201_EDGES) or [int(f) for _, f in tokens] != expected:
            raise ValueError(
                f"{cell!r} is not a NAS-Bench-201 cell string like "
                "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
            )
        row = []
        for op, _ in tokens:
            if op not in self.ops:
                raise ValueError(f"operation {op!r} in {cell!r} is not allowed; allowed: {', '.join(self.ops)}")
            row.append(self.ops.index(op))
        arr = np.array(row, dtype=np.int64)
        if self.decode(arr) != cell.strip():
            raise ValueError(f"{cell!r} is not in the canonical NAS-Bench-201 form {self.decode(arr)!r}")
        return arr

    def key(self, config: str) -> str:
        return config

    def parse(self, text: str) -> str:
        return self.decode(self.row_of(text))

    def default_seeds(self) -> list[str]:
        # The empty cell (cheapest) and the all-3x3-conv cell (the largest).
        return [self.decode([0] * 6), self.decode([self.ops.index("nor_conv_3x3")] * 6)]


def as_gene_space(space: GeneSpace | MBV3Space) -> GeneSpace:
    """Accept an `MBV3Space` (wrapped in `MBV3Genes`) or any `GeneSpace`."""
    if isinstance(space, GeneSpace):
        return space
    if isinstance(space, MBV3Space):
        return MBV3Genes(space)
    raise ValueError(f"expected a GeneSpace or an ofa.space.MBV3Space, got {type(space).__name__}")
