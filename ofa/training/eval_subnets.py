"""`ofa-eval-subnets`: validation accuracy of sampled sub-networks of a trained supernet.

Each sub-network is extracted, its BN statistics recalibrated on training images, and its
accuracy measured on the validation split (the same split the supernet was trained with).
Rows (`ks,e,d,r,acc,macs,params,...`) are the accuracy predictor's training table; the file
is rewritten atomically after every row, and a rerun skips the sub-networks already there.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from rich.progress import Progress

from app.shell import hydra_command, make_console
from ofa.checkpoint import load_supernet
from ofa.data.datamodule import ImageDataModule
from ofa.evaluation import count_correct, recalibrate_bn
from ofa.io import atomic_write_csv
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig, MBV3Space

COLUMNS = ("ks", "e", "d", "r", "acc", "macs", "params", "fingerprint")


def resolve_checkpoint(path: str | Path) -> Path:
    """A supernet file, or a training run folder holding `supernet.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / "supernet.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no supernet checkpoint at {path} (run ofa-train first, or pass checkpoint=<file>)")
    return path


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


def read_rows(path: Path, space: MBV3Space) -> list[dict[str, str]]:
    """Rows already written for this space (rows of another space are refused)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row.get("fingerprint") != space.fingerprint():
            raise ValueError(
                f"{path} holds rows of space {row.get('fingerprint')}, not {space.fingerprint()}; "
                "choose another output=<csv>"
            )
    return rows


def evaluate_subnets(
    supernet: OFAMobileNetV3,
    dm: ImageDataModule,
    archs: list[ArchConfig],
    output: Path,
    bn_calibration_images: int = 500,
    on_row: Callable[[dict[str, str | float | int]], None] | None = None,
) -> list[dict]:
    space = supernet.space
    rows: list[dict] = read_rows(output, space)
    done = {ArchConfig.from_csv_fields(row) for row in rows}
    todo = [a for a in archs if a not in done]
    images = dm.calibration_images(bn_calibration_images)
    val_batches = list(dm.val_dataloader())
    val_batches = [(dm.normalize(x), y) for x, y in val_batches]
    with Progress(console=make_console(), transient=True) as progress:
        task = progress.add_task(f"evaluating sub-networks ({len(done)} already done)", total=len(todo))
        for arch in todo:
            net = recalibrate_bn(supernet.extract_subnet(arch), images, arch.r)
            correct, total = count_correct(net, val_batches, arch.r)
            row = {
                **arch.to_csv_fields(),
                "acc": round(correct / total, 6),
                "macs": supernet.count_macs(arch),
                "params": supernet.count_params(arch),
                "fingerprint": space.fingerprint(),
            }
            rows.append(row)
            atomic_write_csv(output, rows, COLUMNS)
            if on_row is not None:
                on_row(row)
            progress.advance(task)
    return rows


def run(cfg: DictConfig) -> tuple[Path, list[dict]]:
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    supernet, meta = load_supernet(checkpoint)
    data_seed = meta["info"].get("seed", 0) if cfg.data_seed is None else cfg.data_seed
    dm: ImageDataModule = hydra.utils.instantiate(cfg.data, seed=data_seed)
    output = Path(cfg.output) if cfg.output else checkpoint.parent / "accuracy.csv"
    archs = eval_archs(supernet.space, cfg.n_subnets, cfg.seed)
    rows = evaluate_subnets(supernet, dm, archs, output, cfg.bn_calibration_images)
    return output, rows


@hydra_command("eval_subnets")
def main(cfg: DictConfig) -> None:
    output, rows = run(cfg)
    accs = sorted(float(r["acc"]) for r in rows)
    make_console().print(
        f"{len(rows)} sub-networks in {output}: accuracy {100 * accs[0]:.2f}% .. {100 * accs[-1]:.2f}% "
        f"(median {100 * accs[len(accs) // 2]:.2f}%)"
    )


if __name__ == "__main__":
    main()
