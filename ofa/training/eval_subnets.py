"""Validation accuracy of sampled sub-networks of a trained supernet: the accuracy table.

Each sub-network is extracted, its BN statistics recalibrated on training images, and its
accuracy measured on the validation split (the same split the supernet was trained with).
Rows (`ks,e,d,r,acc,macs,params,fingerprint`) are the accuracy predictor's training table; the
file is rewritten atomically after every row, and a rerun skips the sub-networks already there.
The command is app/eval_subnets.py (`ofa-eval-subnets`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ofa.archtable import archs_of, read_arch_table, write_rows
from ofa.errors import check_int
from ofa.evaluation import subnet_accuracy
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig, MBV3Space

if TYPE_CHECKING:  # lightning (via the data module) costs ~2 s at start-up
    from ofa.data.datamodule import ImageDataModule

COLUMNS = ("ks", "e", "d", "r", "acc", "macs", "params", "fingerprint")


def check_eval_settings(n_subnets: Any, bn_calibration_images: Any, prefix: str = "") -> None:
    """One line for a count that cannot work (commands call this before loading anything)."""
    check_int(f"{prefix}n_subnets", n_subnets, 1)
    check_int(f"{prefix}bn_calibration_images", bn_calibration_images, 1)


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


@dataclass(frozen=True)
class EvalData:
    """What every sub-network is evaluated on: BN-calibration images and the normalised
    validation batches. Read once; a caller that evaluates in rounds (the search's measurement
    loop) keeps it, since reading an image folder again costs seconds per round."""

    images: torch.Tensor
    batches: list


def read_eval_data(
    dm: ImageDataModule, bn_calibration_images: int, on_batch: Callable[[int, int], None] | None = None
) -> EvalData:
    return EvalData(dm.calibration_images(bn_calibration_images), _read_batches(dm, on_batch))


def evaluate_subnets(
    supernet: OFAMobileNetV3,
    dm: ImageDataModule,
    archs: list[ArchConfig],
    output: Path,
    bn_calibration_images: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    data: Callable[[], EvalData] | None = None,
) -> list[dict]:
    """Evaluate the `archs` not yet in `output` and append each row as it is measured; returns
    every row of the file. `on_progress(done, total)` after each sub-network; `on_batch(done,
    total)` after each validation batch read (before the first sub-network), then after each
    batch a sub-network has classified (a large validation set shows progress inside one).
    `data`: a function returning the images and batches to use, called only if some arch is
    new (a caller evaluating in rounds keeps what it returns); default: read from `dm`."""
    space = supernet.space
    output = Path(output)
    table = read_arch_table(output, space, COLUMNS) if output.is_file() else None
    rows: list[dict] = list(table.rows) if table else []
    done = set(archs_of(table, space)) if table else set()
    todo = [a for a in archs if a not in done]
    if not todo:
        return rows
    check_labels_fit(dm, space)
    inputs = data() if data is not None else read_eval_data(dm, bn_calibration_images, on_batch)
    for i, arch in enumerate(todo, start=1):
        _, acc = subnet_accuracy(supernet, arch, inputs.images, _reporting(inputs.batches, on_batch))
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


def check_labels_fit(dm: ImageDataModule, space: MBV3Space) -> None:
    """One line when the dataset has more classes than the supernet's classifier predicts (its
    labels could never be right); fewer are allowed: e.g. ImageNet's first classes only."""
    dm.setup()
    if dm.num_classes is not None and dm.num_classes > space.num_classes:
        raise ValueError(
            f"dataset {dm.name} has {dm.num_classes} classes but the supernet ({space.name}) predicts "
            f"{space.num_classes}; allowed: a dataset of at most {space.num_classes} classes"
        )


def _read_batches(dm: ImageDataModule, on_batch: Callable[[int, int], None] | None) -> list:
    """The normalised validation batches, read once (every sub-network classifies the same)."""
    loader = dm.val_dataloader()
    batches = []
    for x, y in loader:
        batches.append((dm.normalize(x), y))
        if on_batch is not None:
            on_batch(len(batches), len(loader))
    return batches


def _reporting(batches: list, on_batch: Callable[[int, int], None] | None) -> Iterator:
    for i, batch in enumerate(batches, start=1):
        yield batch
        if on_batch is not None:
            on_batch(i, len(batches))
