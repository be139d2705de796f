"""Arch tables: every CSV of this project whose rows name sub-networks (`ks,e,d,r` columns).

`ofa-eval-subnets`' accuracy tables, `ofa-profile`'s measurement tables (and its layer lookup
tables, keyed by `shape` instead), the tables `ofa-fit` reads and the ones merged across
machines all go through this module: one reader, one fingerprint rule, one atomic writer.

The fingerprint rule: a row that carries a `fingerprint` must carry the space's; tables this
project writes always carry one, tables from elsewhere (the shared GPU latency table) may
carry none and are then read against the space the caller names. Every problem is one line
naming the file, the line and the bad value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa.arch import ARCH_FIELDS, ArchConfig
from ofa.io import atomic_write_csv, atomic_write_text
from ofa.space import SPACES, MBV3Space

FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read whole: its header, its rows (as strings) and the SHA-256 of its bytes."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprints(self) -> set[str]:
        return {(r.get(FINGERPRINT) or "").strip() for r in self.rows} - {""}


def read_csv(path: str | os.PathLike, what: str = "table") -> CsvTable:
    """A UTF-8 CSV file (a BOM is allowed); ragged rows are refused with their line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 CSV file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = tuple(h.strip() for h in (reader.fieldnames or []))
    reader.fieldnames = list(header)
    rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if None in row or any(row.get(c) is None for c in header):
            raise ValueError(f"{path} line {line}: the number of fields differs from the header's {len(header)}")
    return CsvTable(path, header, rows, hashlib.sha256(data).hexdigest())


def require_columns(table: CsvTable, columns: Sequence[str], hint: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{table.path} lacks column(s) {', '.join(missing)}; {hint}")


def named_space(fingerprint: str) -> str | None:
    """The name of the registered space with this fingerprint, if any."""
    return next((name for name, s in SPACES.items() if s.fingerprint() == fingerprint), None)


def check_fingerprints(table: CsvTable, fingerprint: str, label: str) -> None:
    """The fingerprint rule: every row that carries a fingerprint carries `fingerprint`
    (`label` names whose it is, e.g. "space mnist")."""
    for line, row in enumerate(table.rows, start=2):
        theirs = (row.get(FINGERPRINT) or "").strip()
        if theirs and theirs != fingerprint:
            name = named_space(theirs)
            hint = f"it is space {name}'s" if name else "no named space has it"
            raise ValueError(
                f"{table.path} line {line}: fingerprint = {theirs} is not {label}'s ({fingerprint}); {hint}"
            )


def space_of(table: CsvTable, space: MBV3Space | str | None) -> MBV3Space:
    """The space to read `table` against: the one given (a name or a space), else the named space
    whose fingerprint the table's rows carry. A table without fingerprints needs a space named."""
    if isinstance(space, str):
        if space not in SPACES:
            raise ValueError(f"space = {space!r} is not a named space; known: {', '.join(sorted(SPACES))}")
        return SPACES[space]
    if space is not None:
        return space
    found = table.fingerprints()
    if not found:
        raise ValueError(f"{table.path} records no space fingerprint; name its space with space=<name>")
    if len(found) > 1:
        raise ValueError(f"{table.path} mixes space fingerprints {', '.join(sorted(found))}")
    (fingerprint,) = found
    name = named_space(fingerprint)
    if name is None:
        raise ValueError(f"{table.path} has fingerprint {fingerprint}, which no named space has; pass space=<name>")
    return SPACES[name]


def read_arch_table(path: str | os.PathLike, space: MBV3Space, columns: Sequence[str] | None = None) -> CsvTable:
    """An arch table checked against `space` (fingerprints) and, given `columns`, against the
    exact header this version writes (a table written by another version is refused)."""
    table = read_csv(path)
    if columns is not None and table.columns and list(table.columns) != list(columns):
        missing = [c for c in columns if c not in table.columns]
        raise ValueError(
            f"{table.path} has other columns than this version writes"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + "; move it aside or pass output=<another csv>"
        )
    if "shape" not in table.columns:
        require_columns(table, ARCH_FIELDS, f"an arch table needs {', '.join(ARCH_FIELDS)}")
    check_fingerprints(table, space.fingerprint(), f"space {space.name}")
    return table


def archs_of(table: CsvTable, space: MBV3Space, space_option: bool = False) -> list[ArchConfig]:
    """The validated sub-network of every row, errors naming the line (and, for commands with
    a `space=` option, how to read the table in another space)."""
    archs = []
    for line, row in enumerate(table.rows, start=2):
        try:
            archs.append(space.parse({k: row[k] for k in ARCH_FIELDS}))
        except ValueError as exc:
            hint = f"space {space.name}" + ("; pick another with space=<name>" if space_option else "")
            raise ValueError(f"{table.path} line {line}: {exc} ({hint})") from None
    return archs


def row_key(row: Mapping[str, Any]) -> str:
    """What a row measures: its layer `shape` (lookup tables) or its sub-network's `ArchConfig.key()`."""
    return str(row["shape"]) if "shape" in row else ArchConfig.from_csv_fields(row).key()


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """The whole table, written atomically."""
    return atomic_write_csv(path, rows, columns)


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Append rows atomically: the file is rewritten beside and renamed, so a kill at any moment
    leaves the old or the new file, never a torn row."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if not old:
        old = ",".join(columns) + "\n"
    elif not old.endswith("\n"):
        old += "\n"
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n").writerows(rows)
    return atomic_write_text(path, old + buf.getvalue())


@dataclass(frozen=True)
class MergeReport:
    output: Path
    added: int  # rows new to the output
    duplicates: int  # rows skipped because their key was already there
    total: int  # rows in the output now


def _merge_key(row: Mapping[str, str]) -> tuple[str, str, str]:
    # canonical ks,e,d,r fields: equal keys mean one sub-network (or one layer shape)
    return row.get("device", ""), row.get(FINGERPRINT, ""), row_key(row)


def merge_tables(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> MergeReport:
    """Append to `output` the rows of `inputs` whose (device, fingerprint, sub-network or shape)
    it does not hold yet: the first row of a key wins. All tables need one header and one
    space fingerprint (the output's, when it exists)."""
    output = Path(output)
    if not inputs:
        raise ValueError("inputs is empty; pass the tables to merge, e.g. inputs=[a.csv,b.csv]")
    merged = read_csv(output) if output.is_file() else None
    columns = list(merged.columns) if merged else []
    rows = list(merged.rows) if merged else []
    fingerprint = next(iter(merged.fingerprints()), None) if merged else None
    seen = {_merge_key(r) for r in rows}
    before, duplicates = len(rows), 0
    for path in map(Path, inputs):
        if path.resolve() == output.resolve():
            continue
        table = read_csv(path, "measurement table")
        if columns and list(table.columns) != columns:
            raise ValueError(f"{path} has other columns than {output}; both must come from this version of ofa-profile")
        columns = columns or list(table.columns)
        fingerprint = fingerprint or next(iter(sorted(table.fingerprints())), None)
        if fingerprint:
            check_fingerprints(table, fingerprint, "the merged tables")
        for r in table.rows:
            k = _merge_key(r)
            if k in seen:
                duplicates += 1
                continue
            seen.add(k)
            rows.append(r)
    write_rows(output, rows, columns)
    return MergeReport(output, len(rows) - before, duplicates, len(rows))
