"""Measurement tables: any CSV with the `ks,e,d,r` columns and a numeric target column.

`hw_profiles/*/measurements.csv`, `ofa-eval-subnets` output and the shared GPU latency table
all have this form. Every problem is reported as one line naming the file, the line and the
bad value.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

    def __len__(self) -> int:
        return len(self.y)

    def take(self, rows: np.ndarray) -> tuple[ArchArrays, np.ndarray]:
        return self.arrays.take(rows), self.y[rows]


def _numeric_columns(header: list[str], rows: list[dict[str, str]]) -> list[str]:
    def numeric(value: str) -> bool:
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False

    sample = rows[:20]
    return [c for c in header if c not in ARCH_FIELDS and sample and all(numeric(r.get(c)) for r in sample)]


def _check_fingerprints(path: Path, rows: list[dict[str, str]], space: MBV3Space) -> None:
    from ofa.space import SPACES

    ours = space.fingerprint()
    for line, row in enumerate(rows, start=2):
        theirs = (row.get("fingerprint") or "").strip()
        if theirs and theirs != ours:
            named = [name for name, s in SPACES.items() if s.fingerprint() == theirs]
            hint = f"pass space={named[0]}" if named else "no named space has it"
            raise ValueError(
                f"{path} line {line}: fingerprint = {theirs} is not the fingerprint of space "
                f"{space.name} ({ours}); {hint}"
            )


def read_table(path: str | Path, target: str, space: MBV3Space) -> Table:
    """Parse and validate a table against `space`; the target must be a finite number in every row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 CSV file") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ValueError(f"{path} is empty; a table needs a header with {', '.join(ARCH_FIELDS)} and a target column")
    reader.fieldnames = header
    rows = list(reader)
    missing = [c for c in ARCH_FIELDS if c not in header]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)}; a table needs {', '.join(ARCH_FIELDS)} and a target column"
        )
    if target in ARCH_FIELDS or target not in header:
        numeric = _numeric_columns(header, rows)
        raise ValueError(
            f"target = {target!r} is not a target column of {path}; "
            f"numeric columns: {', '.join(numeric) if numeric else 'none'}"
        )
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    if "fingerprint" in header:  # tables that say which space they belong to (ofa-eval-subnets, ofa-profile)
        _check_fingerprints(path, rows, space)
    archs, ys = [], []
    for line, row in enumerate(rows, start=2):
        if None in row or any(row.get(c) is None for c in header):
            raise ValueError(f"{path} line {line}: the number of fields differs from the header's {len(header)}")
        try:
            archs.append(space.parse({k: row[k] for k in ARCH_FIELDS}))
        except ValueError as exc:
            raise ValueError(
                f"{path} line {line}: {exc} (space {space.name}; pick another with space=<name>)"
            ) from None
        raw = row[target]
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{path} line {line}: {target} = {raw!r} is not a finite number")
        ys.append(value)
    return Table(path, target, archs, to_arrays(archs, space), np.array(ys), hashlib.sha256(data).hexdigest())


def read_lut(path: str | Path) -> dict[str, float]:
    """A per-layer latency lookup table: CSV with at least `shape,latency_ms` (one row per
    distinct `ofa.networks.LayerCost.shape`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lookup table {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "shape" not in header or "latency_ms" not in header:
            raise ValueError(f"{path} needs columns shape and latency_ms; it has {', '.join(header) or 'none'}")
        lut: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["latency_ms"])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{path} line {line}: latency_ms = {row['latency_ms']!r} is not a non-negative number")
            if row["shape"] in lut and lut[row["shape"]] != value:
                raise ValueError(f"{path} line {line}: shape {row['shape']!r} appears twice with different latencies")
            lut[row["shape"]] = value
    if not lut:
        raise ValueError(f"{path} has no rows")
    return lut
