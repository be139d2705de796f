"""The main job: every stage of the pipeline that exists so far, on the configured supernet.

Today: build the supernet, extract the smallest, the largest and a few random sub-networks,
and report their parameters, MACs and measured CPU latency (`subnets.csv` + a table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ofa.cli import hydra_command, make_console
from ofa.io import atomic_write_csv
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig
from predictors.measure.timing import TimingStats
from predictors.measure.torch_cpu import measure_torch_cpu


@dataclass(frozen=True)
class SubnetReport:
    name: str
    arch: ArchConfig
    params: int
    macs: int
    latency: TimingStats

    def to_row(self) -> dict[str, object]:
        return {
            "name": self.name,
            **self.arch.to_csv_fields(),
            "params": self.params,
            "macs": self.macs,
            "latency_ms": round(self.latency.median_ms, 4),
            "latency_p10_ms": round(self.latency.p10_ms, 4),
            "latency_p90_ms": round(self.latency.p90_ms, 4),
            "latency_cv": round(self.latency.cv, 4),
        }


def panel_archs(supernet: OFAMobileNetV3, n_random: int, seed: int) -> dict[str, ArchConfig]:
    """Smallest, largest and `n_random` random sub-networks (seeded)."""
    space = supernet.space
    generator = torch.Generator().manual_seed(seed)
    archs = {"smallest": space.smallest(), "largest": space.largest()}
    archs.update({f"random{i}": space.sample(generator) for i in range(n_random)})
    return archs


def inspect_subnets(
    supernet: OFAMobileNetV3,
    archs: dict[str, ArchConfig],
    batch_size: int,
    rounds: int,
    calls_per_round: int,
    warmup_calls: int,
    console: Console | None = None,
) -> list[SubnetReport]:
    """Extract each arch, count it and time it on this CPU (rounds interleaved)."""
    space = supernet.space
    models = {
        name: (supernet.extract_subnet(arch).eval(), (batch_size, space.in_channels, arch.r, arch.r))
        for name, arch in archs.items()
    }
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("timing sub-networks on the CPU", total=rounds)
        stats = measure_torch_cpu(
            models, rounds, calls_per_round, warmup_calls, progress=lambda r: progress.update(task, completed=r)
        )
    return [
        SubnetReport(name, arch, supernet.count_params(arch), supernet.count_macs(arch), stats[name])
        for name, arch in archs.items()
    ]


def subnet_table(reports: list[SubnetReport], title: str) -> Table:
    table = Table(title=title)
    for col in ("sub-network", "r", "depths", "params (M)", "MACs (M)", "latency ms", "p10-p90 ms"):
        table.add_column(col, justify="left" if col == "sub-network" else "right")
    for rep in reports:
        table.add_row(
            rep.name,
            str(rep.arch.r),
            "-".join(map(str, rep.arch.d)),
            f"{rep.params / 1e6:.3f}",
            f"{rep.macs / 1e6:.2f}",
            f"{rep.latency.median_ms:.2f}",
            f"{rep.latency.p10_ms:.2f}-{rep.latency.p90_ms:.2f}",
        )
    return table


def run_pipeline(cfg: DictConfig, out_dir: Path, console: Console | None = None) -> list[SubnetReport]:
    console = console or make_console()
    torch.manual_seed(cfg.seed)
    supernet: OFAMobileNetV3 = hydra.utils.instantiate(cfg.supernet)
    space = supernet.space
    console.print(
        f"supernet [bold]{space.name}[/] (fingerprint {space.fingerprint()}): "
        f"{space.count_subnets():.3e} sub-networks, resolutions {list(space.resolutions)}"
    )
    archs = panel_archs(supernet, cfg.inspect.n_random, cfg.seed)
    reports = inspect_subnets(
        supernet,
        archs,
        cfg.inspect.batch_size,
        cfg.inspect.rounds,
        cfg.inspect.calls_per_round,
        cfg.inspect.warmup_calls,
        console,
    )
    rows = [r.to_row() for r in reports]
    atomic_write_csv(out_dir / "subnets.csv", rows, list(rows[0]))
    console.print(subnet_table(reports, f"sub-networks of {space.name}, batch {cfg.inspect.batch_size}, torch CPU"))
    console.print(f"written: {out_dir / 'subnets.csv'}")
    return reports


@hydra_command("pipeline")
def main(cfg: DictConfig) -> None:
    run_pipeline(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
