"""Validation accuracy of sampled sub-networks of a trained supernet: the accuracy table.

Each sub-network is extracted, its BN statistics recalibrated on training images, and its
accuracy measured on the validation split (the same split the supernet was trained with).
Rows (`ks,e,d,r,acc,macs,params,fingerprint`) are the accuracy predictor's training table; the
file is rewritten atomically after every row, and a rerun skips the sub-networks already there.
The command is app/eval_subnets.py (`ofa-eval-subnets`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ofa.archtable import archs_of, read_arch_table, write_rows
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import subnet_accuracy
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig, MBV3Space

COLUMNS = ("ks", "e", "d", "r", "acc", "macs", "params", "fingerprint")


def eval_archs(space: MBV3Space, n: int, seed: int) -> list[ArchConfig]:
    """Smallest and largest (each resolution's extremes), then uniform random ones: `n` distinct."""
    archs: list[ArchConfig] = []
    for r in (min(space.resolutions), max(space.resolutions)):
        archs += [space.smallest(r), space.largest(r)]
    g = torch.Generator().manual_seed(seed)
    seen = set(archs)
    while len(archs) < n:
        arch = space.sample(g)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs[:n]


def evaluate_subnets(
    supernet: OFAMobileNetV3,
    dm: ImageDataModule,
    archs: list[ArchConfig],
    output: Path,
    bn_calibration_images: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Evaluate the `archs` not yet in `output` and append each row as it is measured; returns
    every row of the file. `on_progress(done, total)` after each sub-network."""
    space = supernet.space
    output = Path(output)
    table = read_arch_table(output, space, COLUMNS) if output.is_file() else None
    rows: list[dict] = list(table.rows) if table else []
    done = set(archs_of(table, space)) if table else set()
    todo = [a for a in archs if a not in done]
    images = dm.calibration_images(bn_calibration_images)
    val_batches = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]
    for i, arch in enumerate(todo, start=1):
        _, acc = subnet_accuracy(supernet, arch, images, val_batches)
        rows.append(
            {
                **arch.to_csv_fields(),
                "acc": round(acc, 6),
                "macs": supernet.count_macs(arch),
                "params": supernet.count_params(arch),
                "fingerprint": space.fingerprint(),
            }
        )
        write_rows(output, rows, COLUMNS)
        if on_progress is not None:
            on_progress(i, len(todo))
    return rows
