"""Does a sub-network taken from the supernet match the same architecture trained alone?

Loads a trained supernet (an ofa-train run folder or its supernet.safetensors), evaluates the
chosen sub-networks after BN recalibration, trains each architecture alone from scratch for
the same number of epochs as the supernet's schedule (several seeds), and prints both
accuracies side by side with the spread over seeds.

    .venv/bin/python bench/supernet_vs_standalone.py runs/train/mnist5k-progressive_shrinking \
        [--archs smallest] [--seeds 3] [--lr 0.1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rich.table import Table

from app.shell import make_console
from ofa.checkpoint import load_supernet, resolve_checkpoint
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import count_correct, recalibrate_bn
from ofa.training.standalone import train_standalone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="ofa-train run folder or supernet.safetensors")
    parser.add_argument("--archs", nargs="+", default=["smallest"], choices=["smallest", "largest"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1, help="peak LR of the standalone runs")
    parser.add_argument("--epochs", type=int, default=None, help="default: the supernet schedule's epochs")
    args = parser.parse_args()

    console = make_console()
    supernet, meta = load_supernet(resolve_checkpoint(args.checkpoint))
    info = meta["info"]
    epochs = args.epochs or int(info["epochs"])
    dm = ImageDataModule(name=info.get("data", "mnist5k"), seed=info.get("seed", 0), shift=2)
    images = dm.calibration_images(500)
    val = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    console.print(f"supernet: {info['schedule']}, {epochs} epochs, data {dm.name}; standalone: {args.seeds} seeds")

    table = Table(title="validation accuracy: from the supernet vs trained alone (same epochs)")
    for col in ("sub-network", "r", "MACs (M)", "supernet", "alone: median", "alone: min-max", "supernet - alone"):
        table.add_column(col, justify="right")
    for name in args.archs:
        arch = getattr(supernet.space, name)()
        net = recalibrate_bn(supernet.extract_subnet(arch), images, arch.r)
        correct, total = count_correct(net, val, arch.r)
        from_supernet = correct / total
        alone = []
        for seed in range(args.seeds):
            start = time.time()
            alone.append(train_standalone(supernet.space, arch, dm, epochs, args.lr, seed))
            console.print(f"  {name} alone, seed {seed}: {100 * alone[-1]:.2f}% ({time.time() - start:.0f} s)")
        med = statistics.median(alone)
        table.add_row(
            name,
            str(arch.r),
            f"{supernet.count_macs(arch) / 1e6:.2f}",
            f"{100 * from_supernet:.2f}%",
            f"{100 * med:.2f}%",
            f"{100 * min(alone):.2f}-{100 * max(alone):.2f}%",
            f"{100 * (from_supernet - med):+.2f} pt",
        )
    console.print(table)


if __name__ == "__main__":
    main()
