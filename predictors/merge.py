"""Merge measurement tables profiled in parallel (several machines, shards or seeds) into one.

Rows are keyed by (device, space fingerprint, sub-network or shape): the first row of a key wins,
so rows already in the output stay and a row measured twice is kept once. Every input must have
the columns this version writes and one space fingerprint (the output's, when it exists).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ofa.io import atomic_write_csv
from ofa.space import ARCH_FIELDS


@dataclass(frozen=True)
class MergeReport:
    output: Path
    added: int  # rows new to the output
    duplicates: int  # rows skipped because their key was already there
    total: int  # rows in the output now


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"measurement table {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _key(row: dict[str, str]) -> tuple[str, ...]:
    # ofa-profile writes canonical ks,e,d,r fields, so equal strings mean one sub-network
    what = row["shape"] if "shape" in row else "|".join(row[f] for f in ARCH_FIELDS)
    return row.get("device", ""), row.get("fingerprint", ""), what


def merge_measurements(inputs: Sequence[str | Path], output: str | Path) -> MergeReport:
    """Append to `output` the rows of `inputs` whose key it does not hold yet (atomic write)."""
    output = Path(output)
    if not inputs:
        raise ValueError("inputs is empty; pass the tables to merge, e.g. inputs=[a.csv,b.csv]")
    columns, rows = _read(output) if output.is_file() else ([], [])
    fingerprints = {r["fingerprint"] for r in rows}
    seen = {_key(r) for r in rows}
    before, duplicates = len(rows), 0
    for path in map(Path, inputs):
        if path.resolve() == output.resolve():
            continue
        cols, new = _read(path)
        if columns and cols != columns:
            raise ValueError(f"{path} has other columns than {output}; both must come from this version of ofa-profile")
        columns = columns or cols
        fingerprints |= {r["fingerprint"] for r in new}
        if len(fingerprints) > 1:
            raise ValueError(
                f"{path} holds sub-networks of space fingerprint {', '.join(sorted(fingerprints))}: "
                "tables of different supernets cannot be merged"
            )
        for r in new:
            k = _key(r)
            if k in seen:
                duplicates += 1
                continue
            seen.add(k)
            rows.append(r)
    atomic_write_csv(output, rows, columns)
    return MergeReport(output, len(rows) - before, duplicates, len(rows))
