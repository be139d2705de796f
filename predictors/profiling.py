"""Profiling: measure sub-networks (or, for the lookup table, layer shapes) on a device profile.

The work is cut into groups of `noise.group_size` items in a seeded random order (so the
machine's drift does not correlate with size). Each group is measured in interleaved rounds
together with the reference sub-network, and its rows are appended to the CSV at once
(atomically: the file is rewritten beside and renamed). An interrupted run therefore loses
at most the group in flight, and a rerun skips every arch (shape) already in the file: no
row is lost or repeated. Every row records the space fingerprint; a file of another space is
refused. `ofa-profile` (app/profile.py) is the command over these functions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa.archtable import row_key
from ofa.networks import OFAMobileNetV3
from ofa.networks.costs import count_macs, count_params
from ofa.space import ArchConfig, MBV3Space
from ofa.threads import torch_threads
from predictors.groups import GroupRun, Item, Progress, measure_group
from predictors.layers import lut_layers
from predictors.measure.profile import DeviceProfile
from predictors.measurements import LUT_COLUMNS, MEASUREMENT_COLUMNS, read_measurements, with_table_anchor
from predictors.sampling import reference_arch

__all__ = [
    "LUT_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "ProfileReport",
    "measure_group",
    "profile_lut",
    "profile_subnets",
    "with_table_anchor",
]


@dataclass
class ProfileReport:
    output: Path
    rows: list[dict[str, Any]]  # rows written by this run
    skipped: int  # items already in the file
    total: int  # rows in the file now


def _reference_item(space: MBV3Space, supernet: OFAMobileNetV3, batch_size: int) -> Item:
    ref = reference_arch(space)
    shape = (batch_size, space.in_channels, ref.r, ref.r)
    return Item(f"{space.fingerprint()}|{ref.key()}|b{batch_size}", lambda: supernet.extract_subnet(ref), shape, {})


def _subnet_item(supernet: OFAMobileNetV3, arch: ArchConfig, batch_size: int) -> Item:
    space = supernet.space
    return Item(
        f"{space.fingerprint()}|{arch.key()}|b{batch_size}",
        functools.partial(supernet.extract_subnet, arch),
        (batch_size, space.in_channels, arch.r, arch.r),
        {**arch.to_csv_fields(), "macs": count_macs(space, arch), "params": count_params(space, arch)},
    )


def profile_subnets(
    profile: DeviceProfile,
    supernet: OFAMobileNetV3,
    archs: Sequence[ArchConfig],
    output: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    on_progress: Progress | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
) -> ProfileReport:
    """Measure `archs` on the profile's device and append their rows to `output` (default
    `hw_profiles/<name>/measurements.csv`); archs already in the file are skipped.
    `on_progress(done, total)` (sub-networks of this run) is called before the first group and
    after each group is on disk."""
    output = Path(output) if output is not None else profile.measurements_csv
    with torch_threads(profile.threads):  # extraction, export and measurement alike
        unique = dict.fromkeys(supernet.space.validate(a) for a in archs)
        candidates = {a.key(): _subnet_item(supernet, a, profile.batch_size) for a in unique}
        run = _Run(workdir, seed, on_progress, backend_kwargs, with_sampler=True)
        return _profile(profile, supernet, _Table(output, MEASUREMENT_COLUMNS, ()), candidates, run)


def profile_lut(
    profile: DeviceProfile,
    supernet: OFAMobileNetV3,
    output: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    on_progress: Progress | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
) -> ProfileReport:
    """Measure every distinct layer shape of the space once (OFA's latency lookup table) into
    `output` (default `hw_profiles/<name>/lut.csv`, column `shape` = `LayerCost.shape`)."""
    output = Path(output) if output is not None else profile.lut_csv
    fingerprint, b = supernet.space.fingerprint(), profile.batch_size
    with torch_threads(profile.threads):
        candidates = {}
        for shape, (cost, module, input_shape) in lut_layers(supernet, b).items():
            fields = {"shape": shape, "macs": cost.macs, "params": cost.params}
            candidates[shape] = Item(f"{fingerprint}|layer|{shape}|b{b}", lambda m=module: m, input_shape, fields)
        run = _Run(workdir, seed, on_progress, backend_kwargs, with_sampler=False)
        return _profile(profile, supernet, _Table(output, LUT_COLUMNS, ()), candidates, run)


@dataclass(frozen=True)
class _Table:
    """The table a run appends to: its path, the columns it has and the rows it holds."""

    output: Path
    columns: Sequence[str]
    existing: Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class _Run:
    """How one profiling run measures: where backends cache, the order's seed, the callback."""

    workdir: str | os.PathLike | None
    seed: int
    on_progress: Progress | None
    backend_kwargs: Mapping[str, Any] | None
    with_sampler: bool


def _profile(
    profile: DeviceProfile, supernet: OFAMobileNetV3, table: _Table, candidates: Mapping[str, Item], run: _Run
) -> ProfileReport:
    """Measure the candidates (keyed like `ofa.archtable.row_key`) the table does not hold yet,
    in a seeded random order (the machine's drift must not follow size), appending to it."""
    existing = read_measurements(table.output, table.columns, supernet.space, profile)
    present = {row_key(r) for r in existing}
    todo = [k for k in candidates if k not in present]
    items = [candidates[todo[i]] for i in np.random.default_rng(run.seed).permutation(len(todo))]
    table = _Table(table.output, table.columns, existing)
    rows = _measure(profile, supernet, items, table, run)
    return ProfileReport(table.output, rows, len(candidates) - len(todo), len(existing) + len(rows))


def _measure(
    profile: DeviceProfile, supernet: OFAMobileNetV3, items: Sequence[Item], table: _Table, run: _Run
) -> list[dict[str, Any]]:
    if not items:
        return []
    workdir = Path(run.workdir) if run.workdir is not None else profile.cache_dir
    space = supernet.space
    with profile.make_backend(workdir, **dict(run.backend_kwargs or {})) as backend:
        sampler = profile.make_sampler() if run.with_sampler else None
        try:
            reference = _reference_item(space, supernet, profile.batch_size)
            groups = GroupRun(profile, backend, sampler, reference, table.output, table.columns, space.fingerprint())
            return groups.run(items, table.existing, run.on_progress)
        finally:
            if sampler is not None:
                sampler.close()
