"""The tables `ofa-profile` writes: their columns, one normalised row, the profile's check of a
table it appends to, and the reference anchor a table records.

Reading, the fingerprint rule and atomic appends are `ofa.archtable`'s; what is specific to a
device profile (the latency statistic and the normalisation anchor every row must share) is here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ofa.archtable import read_arch_table, read_csv
from ofa.space import ARCH_FIELDS, MBV3Space
from predictors.measure.profile import DeviceProfile
from predictors.measure.session import Measurement

STAT_COLUMNS = [
    "latency_ms",  # the profile's figure: latency_<statistic>_ms x latency_scale
    "latency_stat",  # median | floor, with "*ref" when normalised to the reference (see normalised_row)
    "latency_scale",  # the factor applied to latency_<stat>_ms (1 when not normalised)
    "latency_median_ms",
    "latency_floor_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "latency_iqr_ms",
    "latency_cv",
    "latency_rounds",
    "latency_calls",
    "iterations_per_round",
    "remeasured",
    "power_w",
    "energy_mj",
    "power_method",
    "power_window_s",
]
CONTEXT_COLUMNS = [
    "ref_latency_ms",
    "ref_drift",
    "ref_anchor_ms",
    "group",
    "group_retries",
    "run_id",
    "timestamp",
    "device",
    "supernet",
    "fingerprint",
    "backend",
    "precision",
    "batch_size",
    "threads",
    "clock",
    "host",
    "hardware",
    "versions",
]
MEASUREMENT_COLUMNS = [*ARCH_FIELDS, *STAT_COLUMNS, "macs", "params", *CONTEXT_COLUMNS]
LUT_COLUMNS = ["shape", *STAT_COLUMNS, "macs", "params", *CONTEXT_COLUMNS]


def latency_label(profile: DeviceProfile) -> str:
    """What the profile writes into `latency_stat`: its statistic, with `*ref` when normalised."""
    t = profile.timing
    return t.statistic if t.normalize == "none" else f"{t.statistic}*ref"


def read_measurements(
    path: str | os.PathLike, columns: Sequence[str], space: MBV3Space, profile: DeviceProfile
) -> list[dict[str, str]]:
    """The rows of an existing table the profile would append to (none when there is no file),
    refused if its header or space fingerprint (`ofa.archtable`), or its latency statistic or
    normalisation anchor, differ from what the profile writes."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    table = read_arch_table(path, space, columns)  # refuses another header, even without rows
    check_profile_rows(path, table.rows, profile)
    return table.rows


def check_profile_rows(path: Path, rows: Sequence[Mapping[str, str]], profile: DeviceProfile) -> None:
    """Rows measured with the profile's latency statistic and, with a fixed anchor, that anchor."""
    if not rows:
        return
    t = profile.timing
    label = latency_label(profile)
    anchors = {row["ref_anchor_ms"] for row in rows}
    fixed = t.reference_ms is not None and t.normalize != "none"
    stale = sorted({row["latency_stat"] for row in rows} - {label})
    if fixed and anchors != {str(round(t.reference_ms, 5))}:
        stale.append(f"reference anchors {', '.join(sorted(anchors))} ms (the profile's: {t.reference_ms})")
    if stale:
        raise ValueError(
            f"{path} holds latencies of {', '.join(stale)}, not what the profile writes ({label}); "
            "move it aside or pass output=<another csv>"
        )


def anchor_ms(profile: DeviceProfile, baseline: float) -> float | None:
    """What the reference's latency is taken to be when normalising: the profile's
    `timing.reference_ms`, else the file's first group's reference; None without normalising."""
    if profile.timing.normalize == "none":
        return None
    return profile.timing.reference_ms or baseline


def normalised_row(
    fields: Mapping[str, Any], m: Measurement, ref_ms: float, baseline: float, anchor: float | None
) -> dict[str, Any]:
    """One row without its group context: the arch (or shape) `fields`, the measurement, and the
    normalisation to the reference. Normalised, latency_ms is the sub-network's time relative to
    the reference timed in the same interleaved rounds, times the anchor: the machine's speed
    level (which moves 5-15 % between minutes here) cancels in the ratio. Only latency_ms is
    scaled; the other latency columns stay raw."""
    scale = 1.0 if anchor is None else anchor / ref_ms
    row = {**fields, **m.to_row()}
    row["latency_ms"] = round(m.latency_ms * scale, 5)
    row["latency_stat"] = m.statistic if anchor is None else f"{m.statistic}*ref"
    row["latency_scale"] = round(scale, 5)
    return {
        **row,
        "ref_latency_ms": round(ref_ms, 5),
        "ref_drift": round(ref_ms / baseline, 4),
        "ref_anchor_ms": "" if anchor is None else round(anchor, 5),
    }


def with_table_anchor(profile: DeviceProfile, table: Path | None = None) -> DeviceProfile:
    """The profile with `timing.reference_ms` pinned to the anchor recorded in `table` (default:
    the profile's measurements.csv) when it normalises to the reference without a fixed anchor.
    Later measurements (ofa-search's checks of its choices) are then in the units of the table
    its latency predictor was fitted on, not in those of their own first group."""
    t = profile.timing
    table = table or profile.measurements_csv
    if t.normalize == "none" or t.reference_ms is not None or not table.is_file():
        return profile
    anchor = next((row.get("ref_anchor_ms") for row in read_csv(table, "measurement table").rows), None)
    if not anchor:
        return profile
    return dataclasses.replace(profile, timing=dataclasses.replace(t, reference_ms=float(anchor)))
