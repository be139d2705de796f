"""What `ofa-search` measures of its choices: accuracy always (BN recalibrated, validation split),
latency with the device's profile when its backend runs on this machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from torch import nn

from app.progress import progress_bar
from ofa.archtable import read_csv, row_key
from ofa.evaluation import subnet_accuracy
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig
from predictors.measure.backends import runs_here
from predictors.measure.optional import MissingPackageError
from predictors.measure.profile import DeviceProfile

if TYPE_CHECKING:  # lightning (via the data module) costs ~2 s at start-up; hydra imports it when needed
    from ofa.data.datamodule import ImageDataModule


@dataclass
class Measured:
    """The chosen sub-networks (by arch key): their extracted nets and measured figures."""

    nets: dict[str, nn.Module] = field(default_factory=dict)
    acc: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def of(self, key: str) -> dict[str, float]:
        measured = {"acc": self.acc[key]}
        if key in self.latency_ms:
            measured["latency_ms"] = self.latency_ms[key]
        return measured


def measure_accuracy(supernet: OFAMobileNetV3, dm: ImageDataModule, archs: list[ArchConfig], n_calib: int) -> Measured:
    """Validation accuracy of each arch's extracted, BN-recalibrated sub-network (and the nets)."""
    measured = Measured()
    if not archs:
        return measured
    images = dm.calibration_images(n_calib)
    batches = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    for arch in archs:
        key = arch.key()
        measured.nets[key], measured.acc[key] = subnet_accuracy(supernet, arch, images, batches)
    return measured


def measure_latency(
    profile: DeviceProfile, supernet: OFAMobileNetV3, archs: list[ArchConfig], out: Path, mode: Any, console: Console
) -> dict[str, float]:
    """Measured latency per arch key with the device profile (empty when it cannot run here)."""
    from predictors.profiling import profile_subnets, with_table_anchor

    if mode is False or mode == "false" or not archs:
        return {}
    if mode == "auto" and not runs_here(profile.backend):
        console.print(f"[yellow]latency not measured: backend {profile.backend} needs a GPU, none here[/]")
        return {}
    try:
        profile = with_table_anchor(profile)  # in the units of the table the predictor was fitted on
        with progress_bar(console, f"measuring {len(archs)} chosen sub-networks on {profile.name}") as on_progress:
            report = profile_subnets(profile, supernet, archs, output=out / "measured_latency.csv",
                                     workdir=out / "cache", on_progress=on_progress)  # fmt: skip
    except MissingPackageError as exc:
        if mode == "auto":
            console.print(f"[yellow]latency not measured: {exc}[/]")
            return {}
        raise
    return {row_key(r): float(r["latency_ms"]) for r in read_csv(report.output).rows}


def measure_choices(
    profile: DeviceProfile,
    supernet: OFAMobileNetV3,
    dm: ImageDataModule,
    chosen: list[ArchConfig],
    cfg: Any,
    out: Path,
    console: Console,
) -> Measured:
    with console.status(f"measuring the accuracy of {len(chosen)} chosen sub-networks"):
        measured = measure_accuracy(supernet, dm, chosen, int(cfg.bn_calibration_images))
    measured.latency_ms = measure_latency(profile, supernet, chosen, out, cfg.measure_latency, console)
    return measured
