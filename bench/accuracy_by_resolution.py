"""Does accuracy rise with resolution? The same random architectures, each evaluated at every
resolution of the supernet's space (BN recalibrated), side by side.

A sub-network's MACs grow with the square of its resolution, so when accuracy does not grow
with it, Kendall tau between accuracy and MACs stays near zero however well the supernet is
trained. Prints, per resolution, the mean accuracy and MACs, and per pair of resolutions the
paired difference (median and min-max over the architectures).

    .venv/bin/python bench/accuracy_by_resolution.py runs/train/mnist5k-sandwich [--archs 8]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import torch
from rich.table import Table

from app.shell import make_console
from ofa.arch import ArchConfig
from ofa.checkpoint import load_supernet, resolve_checkpoint
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import subnet_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="ofa-train run folder or supernet.safetensors")
    parser.add_argument("--archs", type=int, default=8, help="random architectures, each at every resolution")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calibration-images", type=int, default=500)
    args = parser.parse_args()

    console = make_console()
    supernet, meta = load_supernet(resolve_checkpoint(args.checkpoint))
    info, space = meta["info"], supernet.space
    dm = ImageDataModule(name=info.get("data", "mnist5k"), seed=info.get("seed", 0), shift=2)
    images = dm.calibration_images(args.calibration_images)
    val = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    g = torch.Generator().manual_seed(args.seed)
    acc: dict[int, list[float]] = {r: [] for r in space.resolutions}
    macs: dict[int, list[float]] = {r: [] for r in space.resolutions}
    for i in range(args.archs):
        drawn = space.sample(g)
        for r in space.resolutions:
            arch = ArchConfig(ks=drawn.ks, e=drawn.e, d=drawn.d, r=r)
            acc[r].append(subnet_accuracy(supernet, arch, images, val)[1])
            macs[r].append(supernet.count_macs(arch) / 1e6)
        console.print(f"  arch {i + 1}/{args.archs}: " + ", ".join(f"r{r} {100 * acc[r][-1]:.1f}%" for r in acc))

    n_val = sum(len(y) for _, y in val)
    table = Table(title=f"the same {args.archs} architectures at each resolution ({space.name}, {n_val} images)")
    for col in ("resolution", "mean accuracy", "mean MMACs"):
        table.add_column(col, justify="right")
    for r in space.resolutions:
        table.add_row(str(r), f"{100 * statistics.mean(acc[r]):.2f}%", f"{statistics.mean(macs[r]):.2f}")
    console.print(table)
    pairs = Table(title="paired accuracy difference, higher resolution minus lower (points)")
    for col in ("pair", "median", "min-max", "higher better in"):
        pairs.add_column(col, justify="right")
    for lo, hi in itertools.combinations(sorted(space.resolutions), 2):
        diffs = [100 * (b - a) for a, b in zip(acc[lo], acc[hi])]
        wins = sum(d > 0 for d in diffs)
        pairs.add_row(f"r{hi} - r{lo}", f"{statistics.median(diffs):+.2f}", f"{min(diffs):+.2f} to {max(diffs):+.2f}",
                      f"{wins}/{len(diffs)}")  # fmt: skip
    console.print(pairs)


if __name__ == "__main__":
    main()
