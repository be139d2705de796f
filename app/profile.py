"""`ofa-profile`: measure sub-networks (mode=subnets), layer shapes (mode=lut) or merge tables
profiled in parallel (mode=merge) for a device profile. A Hydra shell (conf/profile.yaml) over
`predictors.profiling`; the console, the progress bar and the summary are drawn here."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from app.progress import progress_bar
from app.shell import hydra_command, make_console
from ofa.archtable import merge_tables
from ofa.networks import OFAMobileNetV3
from ofa.paths import supernet_config
from ofa.space import ArchConfig, MBV3Space
from predictors.measure.profile import HW_PROFILES_DIR, DeviceProfile, load_profile
from predictors.profiling import ProfileReport, profile_lut, profile_subnets
from predictors.sampling import sample_for_transfer, sample_spread
from predictors.transfer_sources import resolve_sources, source_latencies

MODES = ("subnets", "lut", "merge")
STRATEGIES = ("spread", "transfer")


def build_supernet(name: str | DictConfig, seed: int) -> OFAMobileNetV3:
    """The supernet of `conf/supernet/<name>.yaml` (or of the composed `supernet=<name>` group
    node) with weights seeded by `seed` (latency does not depend on them); the global torch RNG
    is left as it was."""
    node = OmegaConf.load(supernet_config(name)) if isinstance(name, str) else name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return hydra.utils.instantiate(node).eval()


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


def _merge(cfg: DictConfig, profile: DeviceProfile, console: Console) -> ProfileReport:
    merged = merge_tables(list(cfg.inputs or []), cfg.output or profile.measurements_csv)
    console.print(
        f"merged into {merged.output}: {merged.added} rows added, {merged.duplicates} duplicates skipped, "
        f"{merged.total} rows"
    )
    return ProfileReport(merged.output, [], merged.duplicates, merged.total)


def choose_subnets(cfg: DictConfig, space: MBV3Space, console: Console) -> list[ArchConfig]:
    """The sub-networks mode=subnets measures: `strategy=spread` (over the MACs range) or
    `strategy=transfer` (what a predictor transferred from `sources` needs most; predictors.transfer)."""
    strategy = str(cfg.get("strategy") or "spread")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy = {strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
    names = [str(s) for s in (cfg.get("sources") or [])]
    if strategy == "spread":
        if names:
            raise ValueError("sources are used by strategy=transfer only; add strategy=transfer or drop sources")
        return sample_spread(space, cfg.n_subnets, cfg.seed)
    if not names:
        raise ValueError("strategy = 'transfer' needs sources=[<device or measurement table>,...] of the same space")
    sources = resolve_sources(names, space, "latency_ms", cfg.profiles_dir or HW_PROFILES_DIR, cfg.seed)
    archs = sample_for_transfer(space, cfg.n_subnets, cfg.seed, functools.partial(source_latencies, sources))
    console.print(
        f"{len(archs)} sub-networks chosen for a predictor transferred from {', '.join(names)} "
        f"(D-optimal on their predicted latencies and cost features, seed {cfg.seed})"
    )
    return archs


def run_profile(cfg: DictConfig, console: Console | None = None) -> ProfileReport:
    """The `ofa-profile` job on a composed `conf/profile.yaml` (tests call this directly)."""
    console = console or make_console()
    if cfg.mode not in MODES:
        raise ValueError(f"mode = {cfg.mode!r} is not allowed; allowed: {', '.join(MODES)}")
    overrides = OmegaConf.to_container(cfg.device_overrides, resolve=True) if cfg.device_overrides else None
    profile = load_profile(cfg.device, root=cfg.profiles_dir or HW_PROFILES_DIR, overrides=overrides)
    if cfg.mode == "merge":
        return _merge(cfg, profile, console)
    supernet = build_supernet(cfg.get("supernet") or profile.supernet, cfg.seed)
    space = supernet.space
    what, label = ("layer shapes", "shape") if cfg.mode == "lut" else ("sub-networks", "arch")
    console.print(
        f"[bold]{profile.name}[/]: {profile.backend} {profile.precision}, batch {profile.batch_size}, "
        f"{what} of {space.name} ({space.fingerprint()})"
    )
    with progress_bar(console, f"measuring {what} on {profile.name}") as on_progress:
        if cfg.mode == "lut":
            report = profile_lut(profile, supernet, cfg.output, cfg.cache_dir, seed=cfg.seed, on_progress=on_progress)
        else:
            archs = choose_subnets(cfg, space, console)
            report = profile_subnets(
                profile, supernet, archs, cfg.output, cfg.cache_dir, seed=cfg.seed, on_progress=on_progress
            )
    console.print(f"{report.skipped} {what} already in {report.output}, {len(report.rows)} measured now")
    if report.rows:
        console.print(summary_table(report.rows, f"{profile.name}: {profile.backend} {profile.precision}", label))
    console.print(summary_line(report.rows, profile.noise.drift_warn))
    console.print(f"written: {report.output} ({report.total} rows)")
    return report


def _task(cfg: DictConfig) -> None:
    run_profile(cfg, make_console())


main = hydra_command("profile")(_task)

if __name__ == "__main__":
    main()
