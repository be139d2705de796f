"""Tables to fit on: any CSV with the `ks,e,d,r` columns and a numeric target column.

`hw_profiles/*/measurements.csv`, `ofa-eval-subnets` output and the shared GPU latency table
all have this form. Reading, the fingerprint rule and the arch checks are `ofa.archtable`'s;
every problem is reported as one line naming the file, the line and the bad value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ofa.archtable import CsvTable, archs_of, check_fingerprints, read_csv, require_columns, space_of
from ofa.space import ARCH_FIELDS, ArchConfig, MBV3Space
from predictors.features import ArchArrays, to_arrays


@dataclass(frozen=True)
class Table:
    path: Path
    target: str
    archs: list[ArchConfig]
    arrays: ArchArrays
    y: np.ndarray
    sha256: str  # of the file's bytes: which data a predictor was fitted on
    space: MBV3Space  # the space the rows were read against

    def __len__(self) -> int:
        return len(self.y)

    def take(self, rows: np.ndarray) -> tuple[ArchArrays, np.ndarray]:
        return self.arrays.take(rows), self.y[rows]


def _numeric_columns(table: CsvTable) -> list[str]:
    def numeric(value: str | None) -> bool:
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False

    sample = table.rows[:20]
    return [c for c in table.columns if c not in ARCH_FIELDS and sample and all(numeric(r.get(c)) for r in sample)]


COST_PREFIXES = ("latency", "power", "energy")  # targets that are measured costs: positive by nature


def _targets(table: CsvTable, target: str) -> np.ndarray:
    ys = []
    for line, row in enumerate(table.rows, start=2):
        raw = row[target]
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{table.path} line {line}: {target} = {raw!r} is not a finite number")
        if value <= 0 and target.startswith(COST_PREFIXES):
            raise ValueError(f"{table.path} line {line}: {target} = {raw!r} is not allowed; a measured cost is > 0")
        ys.append(value)
    return np.array(ys)


def read_table(path: str | os.PathLike, target: str, space: MBV3Space | str | None = None) -> Table:
    """Parse and validate a table; the target must be a finite number in every row. `space`: a
    space or its name; None reads the table against the named space its fingerprints record
    (a table without fingerprints then asks for `space=<name>`)."""
    table = read_csv(path, "table")
    hint = f"a table needs {', '.join(ARCH_FIELDS)} and a target column"
    if not table.columns:
        raise ValueError(f"{table.path} is empty; {hint}")
    require_columns(table, ARCH_FIELDS, hint)
    if target in ARCH_FIELDS or target not in table.columns:
        numeric = _numeric_columns(table)
        raise ValueError(
            f"target = {target!r} is not a target column of {table.path}; "
            f"numeric columns: {', '.join(numeric) if numeric else 'none'}"
        )
    if not table.rows:
        raise ValueError(f"{table.path} has a header but no rows")
    space = space_of(table, space)
    check_fingerprints(table, space.fingerprint(), f"space {space.name}")
    archs = archs_of(table, space, space_option=True)
    y = _targets(table, target)
    return Table(table.path, target, archs, to_arrays(archs, space), y, table.sha256, space)


def read_lut(path: str | os.PathLike) -> dict[str, float]:
    """A per-layer latency lookup table: CSV with at least `shape,latency_ms` (one row per
    distinct `ofa.networks.LayerCost.shape`)."""
    table = read_csv(path, "lookup table")
    if "shape" not in table.columns or "latency_ms" not in table.columns:
        raise ValueError(
            f"{table.path} needs columns shape and latency_ms; it has {', '.join(table.columns) or 'none'}"
        )
    lut: dict[str, float] = {}
    for line, row in enumerate(table.rows, start=2):
        try:
            value = float(row["latency_ms"])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{table.path} line {line}: latency_ms = {row['latency_ms']!r} is not a non-negative number"
            )
        if row["shape"] in lut and lut[row["shape"]] != value:
            raise ValueError(f"{table.path} line {line}: shape {row['shape']!r} appears twice with different latencies")
        lut[row["shape"]] = value
    if not lut:
        raise ValueError(f"{table.path} has no rows")
    return lut
