"""`ofa-profile`: measure sub-networks (or, in LUT mode, layer shapes) on a device profile.

The work is cut into groups of `noise.group_size` items in a seeded random order (so the
machine's drift does not correlate with size). Each group is measured in interleaved rounds
together with the reference sub-network, and its rows are appended to the CSV at once
(atomically: the file is rewritten beside and renamed). An interrupted run therefore loses
at most the group in flight, and a rerun skips every arch (shape) already in the file: no
row is lost or repeated. Every row records the space fingerprint; a file of another space is
refused.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import statistics
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from ofa.io import atomic_write_text
from ofa.networks import MobileNetV3, OFAMobileNetV3, layer_costs
from ofa.networks.costs import LayerCost, count_macs, count_params
from ofa.networks.mobilenet_v3 import block_specs
from ofa.space import ARCH_FIELDS, ArchConfig, MBV3Space
from predictors.measure.backend import Backend
from predictors.measure.profile import DeviceProfile
from predictors.measure.runner import Runner
from predictors.measure.session import Measurement, measure_runners
from predictors.measure.torch_cpu import torch_threads
from predictors.sampling import reference_arch, sample_spread

STAT_COLUMNS = [
    "latency_ms",  # the profile's figure: latency_<statistic>_ms x latency_scale
    "latency_stat",  # median | floor, with "*ref" when normalised to the reference (see _row)
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


# --- CSV: read, check, append atomically ----------------------------------------------------------
def read_rows(
    path: Path, columns: Sequence[str], fingerprint: str, profile: DeviceProfile | None = None
) -> list[dict[str, str]]:
    """Rows of an existing table, refused if its header, space fingerprint, or (given the profile)
    latency statistic or normalisation anchor differ from what the profile would write."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if header and list(header) != list(columns):
        missing = [c for c in columns if c not in header]
        raise ValueError(
            f"{path} has other columns than this version of ofa-profile writes"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + "; move it aside or pass output=<another csv>"
        )
    others = sorted({row["fingerprint"] for row in rows} - {fingerprint})
    if others:
        raise ValueError(
            f"{path} holds measurements of space fingerprint {', '.join(others)}, not {fingerprint} "
            "(the supernet changed?); move it aside or pass output=<another csv>"
        )
    if profile is not None and rows:
        t = profile.timing
        label = t.statistic if t.normalize == "none" else f"{t.statistic}*ref"
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
    return rows


def append_rows(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Append rows atomically: the whole file is rewritten to a temporary file and renamed, so
    a kill at any moment leaves either the old or the new file, never a torn row."""
    old = path.read_text() if path.is_file() else ""
    if not old:
        old = ",".join(columns) + "\n"
    elif not old.endswith("\n"):
        old += "\n"
    buf = _csv_text(rows, columns)
    atomic_write_text(path, old + buf)


def _csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue()


def arch_key_of_row(row: Mapping[str, str]) -> str:
    return ArchConfig.from_csv_fields(row).key()


# --- layers for the lookup table ------------------------------------------------------------------
class _Pooled(nn.Sequential):
    """final_expand followed by the global pool that the network applies after it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).mean((2, 3), keepdim=True)


def network_layers(net: MobileNetV3, batch_size: int) -> list[tuple[LayerCost, nn.Module, tuple[int, ...]]]:
    """The layers of a static sub-network as `layer_costs` lists them, each with a module that
    computes it on its own and that module's input shape (worked out without running the net)."""
    space, arch = net.space, net.arch
    w = space.widths

    def strided(side: int, stride: int) -> int:
        return (side - 1) // stride + 1

    side = strided(arch.r, space.stem_stride)
    shapes = [(batch_size, space.in_channels, arch.r, arch.r), (batch_size, w["stem"], side, side)]
    for spec in block_specs(space, arch):
        shapes.append((batch_size, spec["in_channels"], side, side))
        side = strided(side, spec["stride"])
    shapes += [
        (batch_size, w["stages"][-1], side, side),
        (batch_size, w["final_expand"], 1, 1),
        (batch_size, w["feature_mix"], 1, 1),
    ]
    modules = [
        net.stem,
        net.first_block,
        *net.blocks,
        _Pooled(net.final_expand),
        net.feature_mix,
        nn.Sequential(nn.Flatten(1), net.classifier),
    ]
    costs = layer_costs(space, arch)
    if not len(costs) == len(modules) == len(shapes):
        raise RuntimeError(f"layer_costs lists {len(costs)} layers but the network has {len(modules)}")
    return list(zip(costs, modules, shapes))


def covering_archs(space: MBV3Space) -> list[ArchConfig]:
    """Archs whose layers hold every distinct layer shape of the space: the full-depth uniform
    arch for each (kernel, expand, resolution). A block's shape depends on its stage, on whether
    it opens the stage, and on (kernel, expand, resolution), all of which these cover."""
    return [
        space.uniform(k, e, space.max_depth, r)
        for r in space.resolutions
        for k in space.kernel_sizes
        for e in space.expand_ratios
    ]


def lut_layers(supernet: OFAMobileNetV3, batch_size: int) -> dict[str, tuple[LayerCost, nn.Module, tuple[int, ...]]]:
    """Every distinct layer shape of the supernet's space with a module and input shape."""
    out: dict[str, tuple[LayerCost, nn.Module, tuple[int, ...]]] = {}
    for arch in covering_archs(supernet.space):
        net = supernet.extract_subnet(arch).eval()
        for cost, module, shape in network_layers(net, batch_size):
            out.setdefault(cost.shape, (cost, module, shape))
    return out


# --- the measurement run ------------------------------------------------------------------------
@dataclass
class ProfileReport:
    output: Path
    rows: list[dict[str, Any]]  # rows written by this run
    skipped: int  # items already in the file
    total: int  # rows in the file now


@dataclass(frozen=True)
class _Item:
    key: str  # the backend's cache key and the resume key
    build: Callable[[], nn.Module]  # extracted when its group comes (hundreds would not fit in memory)
    input_shape: tuple[int, ...]
    fields: dict[str, Any]  # arch or shape columns, macs, params


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_groups(
    profile: DeviceProfile,
    backend: Backend,
    sampler: Any,
    items: list[_Item],
    reference: _Item,
    output: Path,
    columns: Sequence[str],
    existing: list[dict[str, str]],
    fingerprint: str,
    console: Console,
    on_group: Callable[[int], None] | None,
    what: str,
) -> list[dict[str, Any]]:
    group_size = profile.noise.group_size
    first_group = max((int(r["group"]) for r in existing if r.get("group", "").isdigit()), default=-1) + 1
    refs = [float(r["ref_latency_ms"]) for r in existing if r.get("ref_latency_ms")]
    baseline = refs[0] if refs else None  # ref_drift is relative to the file's first group
    fastest_ref = min(refs) if refs else None  # the machine's calm speed so far, for group retries
    run_id = datetime.now().strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}"
    written: list[dict[str, Any]] = []
    ref_runner = backend.prepare(reference.build(), reference.input_shape, reference.key)
    columns_bar = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns_bar, console=console, transient=True) as progress:
            task = progress.add_task(f"measuring {what} on {profile.name}", total=len(items))
            for g, start in enumerate(range(0, len(items), group_size)):
                group = items[start : start + group_size]
                runners: dict[str, Runner] = {}
                try:
                    for item in group:
                        runners[item.key] = backend.prepare(item.build(), item.input_shape, item.key)
                    measured, retries = measure_group(
                        profile, backend, sampler, {**runners, reference.key: ref_runner}, reference.key, fastest_ref
                    )
                finally:
                    for runner in runners.values():
                        runner.close()
                ref_ms = measured[reference.key].latency_ms
                baseline = ref_ms if baseline is None else baseline
                fastest_ref = ref_ms if fastest_ref is None else min(fastest_ref, ref_ms)
                context = dict(group=first_group + g, group_retries=retries, run_id=run_id, timestamp=_now())
                context.update(device=profile.name)
                context.update(supernet=profile.supernet, fingerprint=fingerprint)
                anchor = _anchor_ms(profile, baseline)
                rows = [_row(item, measured[item.key], ref_ms, baseline, anchor, context) for item in group]
                append_rows(output, rows, columns)
                written += rows
                progress.advance(task, len(group))
                if on_group is not None:
                    on_group(len(written))
    finally:
        ref_runner.close()
    return written


def measure_group(
    profile: DeviceProfile,
    backend: Backend,
    sampler: Any,
    runners: Mapping[str, Runner],
    reference: str,
    fastest_ref: float | None,
) -> tuple[dict[str, Measurement], int]:
    """Measure one group; while its reference ran more than `drift_warn` slower than the fastest
    reference of the file so far (a slow spell of the machine spanning the whole group), measure
    it again, up to `noise.group_retries` times, and keep the session whose reference ran fastest.
    With no reference yet to compare with, the first group is measured twice when retries are on."""
    plan, noise = profile.timing_plan(), profile.noise

    def session() -> tuple[dict[str, Measurement], float]:
        measured = measure_runners(backend, runners, plan, sampler, no_power=(reference,))
        return measured, measured[reference].latency_ms

    best, best_ref = session()
    retries = 0
    while retries < noise.group_retries:
        if fastest_ref is not None and best_ref <= fastest_ref * (1.0 + noise.drift_warn):
            break
        again, again_ref = session()
        retries += 1
        if fastest_ref is None:  # the first group: judge further sessions by the faster of its two
            fastest_ref = min(best_ref, again_ref)
        if again_ref < best_ref:
            best, best_ref = again, again_ref
    return best, retries


def _anchor_ms(profile: DeviceProfile, baseline: float) -> float | None:
    """What the reference's latency is taken to be when normalising: the profile's
    `timing.reference_ms`, else the file's first group's reference; None without normalising."""
    if profile.timing.normalize == "none":
        return None
    return profile.timing.reference_ms or baseline


def with_table_anchor(profile: DeviceProfile, table: Path | None = None) -> DeviceProfile:
    """The profile with `timing.reference_ms` pinned to the anchor recorded in `table` (default:
    the profile's measurements.csv) when it normalises to the reference without a fixed anchor.
    Later measurements (ofa-search's checks of its choices) are then in the units of the table
    its latency predictor was fitted on, not in those of their own first group."""
    t = profile.timing
    table = table or profile.measurements_csv
    if t.normalize == "none" or t.reference_ms is not None or not table.is_file():
        return profile
    with table.open(newline="") as f:
        anchor = next((row.get("ref_anchor_ms") for row in csv.DictReader(f)), None)
    if not anchor:
        return profile
    return dataclasses.replace(profile, timing=dataclasses.replace(t, reference_ms=float(anchor)))


def _row(
    item: _Item, m: Measurement, ref_ms: float, baseline: float, anchor: float | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    # Normalised: the sub-network's time relative to the reference timed in the same interleaved
    # rounds, times the anchor. The machine's speed level (which moves 5-15 % between minutes
    # here) cancels in the ratio; only latency_ms is scaled, the other latency columns stay raw.
    scale = 1.0 if anchor is None else anchor / ref_ms
    row = {**item.fields, **m.to_row()}
    row["latency_ms"] = round(m.latency_ms * scale, 5)
    row["latency_stat"] = m.statistic if anchor is None else f"{m.statistic}*ref"
    row["latency_scale"] = round(scale, 5)
    return {
        **row,
        "ref_latency_ms": round(ref_ms, 5),
        "ref_drift": round(ref_ms / baseline, 4),
        "ref_anchor_ms": "" if anchor is None else round(anchor, 5),
        **context,
    }


def _reference_item(space: MBV3Space, supernet: OFAMobileNetV3, batch_size: int) -> _Item:
    ref = reference_arch(space)
    shape = (batch_size, space.in_channels, ref.r, ref.r)
    return _Item(f"{space.fingerprint()}|{ref.key()}|b{batch_size}", lambda: supernet.extract_subnet(ref), shape, {})


def _in_profile_threads(fn: Callable[..., ProfileReport]) -> Callable[..., ProfileReport]:
    """Run the whole job (extraction, export, measurement) with the profile's torch threads."""

    @functools.wraps(fn)
    def wrapper(profile: DeviceProfile, *args: Any, **kwargs: Any) -> ProfileReport:
        with torch_threads(profile.threads):
            return fn(profile, *args, **kwargs)

    return wrapper


@_in_profile_threads
def profile_subnets(
    profile: DeviceProfile,
    supernet: OFAMobileNetV3,
    archs: Sequence[ArchConfig],
    output: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    console: Console | None = None,
    on_group: Callable[[int], None] | None = None,
    seed: int = 0,
    backend_kwargs: Mapping[str, Any] | None = None,
    sampler_kwargs: Mapping[str, Any] | None = None,
) -> ProfileReport:
    """Measure `archs` on the profile's device and append their rows to `output` (default
    `hw_profiles/<name>/measurements.csv`); archs already in the file are skipped.
    `on_group(rows_written)` is called after each group is on disk."""
    console = console or Console()
    space = supernet.space
    fingerprint = space.fingerprint()
    output = Path(output) if output is not None else profile.measurements_csv
    workdir = Path(workdir) if workdir is not None else profile.cache_dir
    existing = read_rows(output, MEASUREMENT_COLUMNS, fingerprint, profile)
    present = {arch_key_of_row(r) for r in existing}
    unique = list(dict.fromkeys(space.validate(a) for a in archs))
    todo = [a for a in unique if a.key() not in present]
    order = np.random.default_rng(seed).permutation(len(todo))  # drift must not follow size
    b = profile.batch_size
    items = [
        _Item(
            f"{fingerprint}|{a.key()}|b{b}",
            functools.partial(supernet.extract_subnet, a),
            (b, space.in_channels, a.r, a.r),
            {**a.to_csv_fields(), "macs": count_macs(space, a), "params": count_params(space, a)},
        )
        for a in (todo[i] for i in order)
    ]
    console.print(
        f"[bold]{profile.name}[/]: {profile.backend} {profile.precision}, batch {b}, "
        f"{len(unique)} sub-networks of {space.name} ({fingerprint}): {len(unique) - len(todo)} already in "
        f"{output}, {len(todo)} to measure"
    )
    rows: list[dict[str, Any]] = []
    if items:
        with profile.make_backend(workdir, **dict(backend_kwargs or {})) as backend:
            sampler = profile.make_sampler(**dict(sampler_kwargs or {}))
            try:
                reference = _reference_item(space, supernet, b)
                rows = _run_groups(
                    profile,
                    backend,
                    sampler,
                    items,
                    reference,
                    output,
                    MEASUREMENT_COLUMNS,
                    existing,
                    fingerprint,
                    console,
                    on_group,
                    "sub-networks",
                )
            finally:
                if sampler is not None:
                    sampler.close()
    return ProfileReport(output, rows, len(unique) - len(todo), len(existing) + len(rows))


@_in_profile_threads
def profile_lut(
    profile: DeviceProfile,
    supernet: OFAMobileNetV3,
    output: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    console: Console | None = None,
    on_group: Callable[[int], None] | None = None,
    seed: int = 0,
    backend_kwargs: Mapping[str, Any] | None = None,
) -> ProfileReport:
    """Measure every distinct layer shape of the space once (OFA's latency lookup table) into
    `output` (default `hw_profiles/<name>/lut.csv`, column `shape` = `LayerCost.shape`)."""
    console = console or Console()
    space = supernet.space
    fingerprint = space.fingerprint()
    output = Path(output) if output is not None else profile.lut_csv
    workdir = Path(workdir) if workdir is not None else profile.cache_dir
    existing = read_rows(output, LUT_COLUMNS, fingerprint, profile)
    present = {r["shape"] for r in existing}
    b = profile.batch_size
    layers = lut_layers(supernet, b)
    todo = [s for s in layers if s not in present]
    order = np.random.default_rng(seed).permutation(len(todo))
    items = []
    for i in order:
        shape = todo[i]
        cost, module, input_shape = layers[shape]
        fields = {"shape": shape, "macs": cost.macs, "params": cost.params}
        items.append(_Item(f"{fingerprint}|layer|{shape}|b{b}", lambda m=module: m, input_shape, fields))
    console.print(
        f"[bold]{profile.name}[/] lookup table: {len(layers)} layer shapes of {space.name} ({fingerprint}): "
        f"{len(layers) - len(todo)} already in {output}, {len(todo)} to measure"
    )
    rows: list[dict[str, Any]] = []
    if items:
        with profile.make_backend(workdir, **dict(backend_kwargs or {})) as backend:
            reference = _reference_item(space, supernet, b)
            rows = _run_groups(
                profile, backend, None, items, reference, output, LUT_COLUMNS, existing, fingerprint, console,
                on_group, "layer shapes",
            )  # fmt: skip
    return ProfileReport(output, rows, len(layers) - len(todo), len(existing) + len(rows))


# --- reporting ------------------------------------------------------------------------------------
def summary_table(rows: Sequence[Mapping[str, Any]], title: str, label: str = "arch", limit: int = 10) -> Table:
    """Up to `limit` rows evenly spread over MACs: MACs, latency (the profile's figure), the raw
    p10-p90 across rounds, CV, power."""
    ordered = sorted(rows, key=lambda r: float(r["macs"]))
    if len(ordered) > limit:
        idx = np.unique(np.linspace(0, len(ordered) - 1, limit).round().astype(int))
        ordered = [ordered[i] for i in idx]
    table = Table(title=title)
    for col in (label, "MMACs", "latency ms", "raw p10-p90 ms", "CV", "re-measured", "power W", "energy mJ"):
        table.add_column(col, justify="left" if col == label else "right")
    for r in ordered:
        name = r["shape"] if "shape" in r else f"r{r['r']} d{r['d']}"
        table.add_row(
            name,
            f"{float(r['macs']) / 1e6:.2f}",
            f"{float(r['latency_ms']):.3f}",
            f"{float(r['latency_p10_ms']):.3f}-{float(r['latency_p90_ms']):.3f}",
            f"{float(r['latency_cv']):.3f}",
            str(r["remeasured"]),
            "-" if r["power_w"] == "" else f"{float(r['power_w']):.1f}",
            "-" if r["energy_mj"] == "" else f"{float(r['energy_mj']):.3f}",
        )
    return table


def summary_line(rows: Sequence[Mapping[str, Any]], drift_warn: float) -> str:
    if not rows:
        return "nothing new measured"
    cvs = [float(r["latency_cv"]) for r in rows]
    drifts = [float(r["ref_drift"]) for r in rows]
    noisy = sum(1 for r in rows if int(r["remeasured"]) > 0)
    floor = str(rows[0].get("latency_stat", "")).startswith("floor")
    line = (
        f"{len(rows)} measured: median CV across rounds {statistics.median(cvs):.3f} (max {max(cvs):.3f})"
        + (" (slow spells, which the floor sets aside)" if floor else "")
        + f", {noisy} re-measured; reference drift {min(drifts):.3f}-{max(drifts):.3f}x of the file's first group"
    )
    if max(abs(d - 1) for d in drifts) > drift_warn:
        line += f" [bold yellow]- drift beyond {drift_warn:.0%}: the machine's speed changed during the run[/]"
    return line


# --- the command ----------------------------------------------------------------------------------
MODES = ("subnets", "lut", "merge")


def build_supernet(name: str, seed: int) -> OFAMobileNetV3:
    """The supernet of `conf/supernet/<name>.yaml` with seeded weights (latency does not depend on them)."""
    import hydra
    from omegaconf import OmegaConf

    from app.shell import CONF_DIR

    path = CONF_DIR / "supernet" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"supernet = {name!r} has no config {path}; known: {', '.join(known)}")
    torch.manual_seed(seed)
    return hydra.utils.instantiate(OmegaConf.load(path)).eval()


def run_profile(cfg: Any, console: Console | None = None) -> ProfileReport:
    """The `ofa-profile` job on a composed `conf/profile.yaml` (tests call this directly)."""
    from omegaconf import OmegaConf

    from predictors.measure.profile import HW_PROFILES_DIR, load_profile

    console = console or Console()
    if cfg.mode not in MODES:
        raise ValueError(f"mode = {cfg.mode!r} is not allowed; allowed: {', '.join(MODES)}")
    overrides = OmegaConf.to_container(cfg.device_overrides, resolve=True) if cfg.device_overrides else None
    profile = load_profile(cfg.device, root=cfg.profiles_dir or HW_PROFILES_DIR, overrides=overrides)
    if cfg.mode == "merge":
        from predictors.merge import merge_measurements

        merged = merge_measurements(list(cfg.inputs or []), cfg.output or profile.measurements_csv)
        console.print(f"merged into {merged.output}: {merged.added} rows added, {merged.duplicates} duplicates "
                      f"skipped, {merged.total} rows")  # fmt: skip
        return ProfileReport(merged.output, [], merged.duplicates, merged.total)
    supernet = build_supernet(cfg.supernet or profile.supernet, cfg.seed)
    output = cfg.output
    workdir = cfg.cache_dir
    if cfg.mode == "lut":
        report = profile_lut(profile, supernet, output, workdir, console, seed=cfg.seed)
        label = "shape"
    else:
        archs = sample_spread(supernet.space, cfg.n_subnets, cfg.seed)
        report = profile_subnets(profile, supernet, archs, output, workdir, console, seed=cfg.seed)
        label = "arch"
    if report.rows:
        console.print(summary_table(report.rows, f"{profile.name}: {profile.backend} {profile.precision}", label))
    console.print(summary_line(report.rows, profile.noise.drift_warn))
    console.print(f"written: {report.output} ({report.total} rows)")
    return report


def _task(cfg: Any) -> None:
    from app.shell import make_console

    run_profile(cfg, make_console())


def main() -> None:
    from app.shell import hydra_command

    hydra_command("profile")(_task)()


if __name__ == "__main__":
    main()
