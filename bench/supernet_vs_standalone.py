"""Does a sub-network taken from the supernet match the same architecture trained alone?

Loads a trained supernet (an ofa-train run folder or its supernet.safetensors), evaluates the
chosen sub-networks after BN recalibration, trains each architecture alone from scratch for
the same number of epochs as the supernet's schedule (several seeds), and prints both
accuracies side by side with the spread over seeds.

Besides the corners (`smallest`, `largest`), `mid0`-`mid2` are three fixed random mid-size
sub-networks: of 500 archs drawn at the middle resolution with a fixed seed, the three whose
MACs lie closest to the geometric mean of the smallest's and the largest's. They are the same
for every supernet of the space, and they are what a budget in the middle of the space gets.

    .venv/bin/python bench/supernet_vs_standalone.py runs/train/mnist5k-sandwich \
        [--archs mid0 mid1 mid2] [--seeds 3] [--lr 0.1]

Several supernets (e.g. `ofa-train seed=0`, `seed=1`, `seed=2`) with `--seeds 1` pair each with
the architectures trained alone on its own data split from its own seed, and the table's last
column is the mean difference over the supernets (a 0.5-point bar needs several: one validation
image is 0.2 pt, and one architecture's seeds alone span 0.7 pt).

    .venv/bin/python bench/supernet_vs_standalone.py runs/s0 runs/s1 runs/s2 --seeds 1
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table

from app.shell import LIGHTNING_RANK_ZERO_LOGGER, make_console, quiet_libraries
from ofa.checkpoint import load_supernet, resolve_checkpoint
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import count_correct, recalibrate_bn
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig
from ofa.training.standalone import train_standalone

ARCHS = ["smallest", "largest", "mid0", "mid1", "mid2"]


def mid_size_archs(supernet: OFAMobileNetV3, n: int = 3, draws: int = 500, seed: int = 0) -> list[ArchConfig]:
    """`n` fixed random archs at the middle resolution whose MACs are closest (in log) to the
    geometric mean of the smallest's and the largest's."""
    space = supernet.space
    r = sorted(space.resolutions)[len(space.resolutions) // 2]
    target = (supernet.count_macs(space.smallest(r)) * supernet.count_macs(space.largest(r))) ** 0.5
    g = torch.Generator().manual_seed(seed)
    pool = {space.sample(g, r=r) for _ in range(draws)}
    return sorted(pool, key=lambda a: (abs(math.log(supernet.count_macs(a) / target)), a.key()))[:n]


def arch_named(supernet: OFAMobileNetV3, name: str) -> ArchConfig:
    if name.startswith("mid"):
        return mid_size_archs(supernet)[int(name[3:])]
    return getattr(supernet.space, name)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="ofa-train run folders or supernet.safetensors")
    parser.add_argument("--archs", nargs="+", default=ARCHS[2:], choices=ARCHS)
    parser.add_argument("--seeds", type=int, default=3, help="standalone seeds per supernet (its data seed onwards)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak LR of the standalone runs")
    parser.add_argument("--epochs", type=int, default=None, help="default: the supernet schedule's epochs")
    args = parser.parse_args()
    # Lightning's adverts, as the commands drop them, and its per-Trainer device lines (one
    # standalone run after another would print them each time)
    logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER).setLevel(logging.WARNING)
    with quiet_libraries():
        compare(args, make_console())


@dataclass
class Pair:
    """One arch of one supernet: its accuracy from the supernet and trained alone (per seed)."""

    arch: ArchConfig
    supernet: float
    alone: list[float]

    @property
    def difference(self) -> float:
        return self.supernet - statistics.median(self.alone)


def compare_one(path: Path, args: argparse.Namespace, console) -> tuple[OFAMobileNetV3, dict[str, Pair]]:
    """The named sub-networks of one supernet, from it and trained alone on its data split, with
    standalone seeds starting at its own seed (several supernets of seeds 0, 1, 2 and --seeds 1
    pair each with an architecture trained on the same split from the same seed)."""
    supernet, meta = load_supernet(resolve_checkpoint(path))
    info = meta["info"]
    if not args.epochs and "epochs" not in info:  # e.g. an imported OFA supernet: no schedule recorded
        raise SystemExit(f"error: {path} records no training schedule (imported?); pass --epochs N")
    epochs = args.epochs or int(info["epochs"])
    data_seed = int(info.get("seed", 0))
    dm = ImageDataModule(name=info.get("data", "mnist5k"), seed=data_seed, shift=2)
    images = dm.calibration_images(500)
    val = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    seeds = list(range(data_seed, data_seed + args.seeds))
    console.print(f"{path}: {info.get('schedule', 'imported')}, {epochs} epochs, data {dm.name} (seed {data_seed}); "
                  f"standalone seeds {seeds}")  # fmt: skip
    pairs = {}
    for name in args.archs:
        arch = arch_named(supernet, name)
        net = recalibrate_bn(supernet.extract_subnet(arch), images, arch.r)
        correct, total = count_correct(net, val, arch.r)
        console.print(f"  {name} ({arch.key()}): from the supernet {100 * correct / total:.2f}%")
        alone = []
        for seed in seeds:
            start = time.time()
            alone.append(train_standalone(supernet.space, arch, dm, epochs, args.lr, seed))
            console.print(f"  {name} alone, seed {seed}: {100 * alone[-1]:.2f}% ({time.time() - start:.0f} s)")
        pairs[name] = Pair(arch, correct / total, alone)
    return supernet, pairs


def compare(args: argparse.Namespace, console) -> None:
    """Each named sub-network from each supernet and trained alone, printed as it goes, then a
    table: per arch, supernet minus alone (median of its seeds) per supernet and their mean."""
    runs = [compare_one(path, args, console) for path in args.checkpoints]
    supernet = runs[0][0]
    table = Table(title="validation accuracy: from the supernet vs trained alone (same epochs)")
    for col in ("sub-network", "r", "MACs (M)", "supernet", "alone: median", "alone: min-max",
                "supernet - alone, per supernet", "mean"):  # fmt: skip
        table.add_column(col, justify="right")
    for name in args.archs:
        pairs = [by_name[name] for _, by_name in runs]
        arch, alone = pairs[0].arch, [a for p in pairs for a in p.alone]  # the same arch in every supernet
        table.add_row(
            name,
            str(arch.r),
            f"{supernet.count_macs(arch) / 1e6:.2f}",
            " / ".join(f"{100 * p.supernet:.2f}" for p in pairs) + "%",
            f"{100 * statistics.median(alone):.2f}%",
            f"{100 * min(alone):.2f}-{100 * max(alone):.2f}%",
            " / ".join(f"{100 * p.difference:+.2f}".replace("-0.00", "+0.00") for p in pairs),
            f"{100 * statistics.mean(p.difference for p in pairs):+.2f} pt",
        )
    console.print(table)


if __name__ == "__main__":
    main()
