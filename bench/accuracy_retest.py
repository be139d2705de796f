"""How much of a sub-network's measured accuracy is noise? Split-half test-retest of an accuracy table.

The accuracy predictor is scored against accuracies measured on a finite validation split
(1,000 images for mnist5k). Which images a sub-network happens to get wrong is a property of
that split that no arch encoding can predict, so it caps the Kendall tau any predictor can
reach, as measurement noise caps a latency predictor. This benchmark re-evaluates the
sub-networks of an `ofa-eval-subnets` table (BN recalibrated exactly as there) on the two
halves of the validation split (even and odd images) and prints Kendall tau between the two
halves, beside the accuracy predictor's held-out tau against the full split.

    .venv/bin/python bench/accuracy_retest.py runs/train/mnist5k-sandwich \
        [--table <run>/accuracy.csv] [--predictor <run>/predictors/acc] [--n 200] [--data mnist5k]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import hydra
import numpy as np
import torch
from rich.progress import track
from rich.table import Table

from app.shell import compose, make_console
from ofa.checkpoint import load_supernet, resolve_checkpoint
from ofa.evaluation import recalibrate_bn, resize
from ofa.io import atomic_write_json
from ofa.space import ArchConfig
from predictors.metrics import kendall_tau


@torch.no_grad()
def correct_per_image(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], r: int) -> np.ndarray:
    """Boolean vector: is each validation image classified correctly (in split order)."""
    model.eval()
    return np.concatenate([(model(resize(x, r)).argmax(1) == y).numpy() for x, y in batches])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="ofa-train run folder or its supernet.safetensors")
    parser.add_argument("--table", type=Path, default=None, help="default: <run>/accuracy.csv")
    parser.add_argument("--predictor", type=Path, default=None, help="default: <run>/predictors/acc")
    parser.add_argument("--n", type=int, default=200, help="sub-networks of the table to re-evaluate")
    parser.add_argument("--data", default="mnist5k", help="the data config the supernet was trained on")
    parser.add_argument("--bn-calibration-images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/accuracy_retest"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = make_console()

    checkpoint = resolve_checkpoint(args.run)
    folder = checkpoint.parent
    table = args.table or folder / "accuracy.csv"
    supernet, meta = load_supernet(checkpoint)
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))[: args.n]
    archs = [ArchConfig.from_csv_fields(r) for r in rows]
    cfg = compose("eval_subnets", overrides=[f"data={args.data}", "checkpoint=unused"])
    dm = hydra.utils.instantiate(cfg.data, seed=meta["info"].get("seed", 0))
    images = dm.calibration_images(args.bn_calibration_images)
    batches = [(dm.normalize(x), y) for x, y in dm.val_dataloader()]

    correct = np.stack(
        [
            correct_per_image(recalibrate_bn(supernet.extract_subnet(a), images, a.r), batches, a.r)
            for a in track(archs, description="re-evaluating sub-networks", console=console, transient=True)
        ]
    )
    full, even, odd = correct.mean(1), correct[:, 0::2].mean(1), correct[:, 1::2].mean(1)
    recorded = np.array([float(r["acc"]) for r in rows])
    predictor_tau = None
    metrics_file = (args.predictor or folder / "predictors" / "acc") / "metrics.json"
    if metrics_file.exists():
        predictor_tau = json.loads(metrics_file.read_text())["kendall_tau"]

    summary = {
        "n_subnets": len(archs),
        "n_val_images": int(correct.shape[1]),
        "accuracy_range": [float(full.min()), float(full.max())],
        "split_half_kendall_tau": kendall_tau(even, odd),
        "max_abs_diff_vs_table": float(np.abs(full - recorded).max()),
        "predictor_heldout_kendall_tau": predictor_tau,
    }
    out = Table(title=f"accuracy test-retest: {len(archs)} sub-networks, {correct.shape[1]} validation images")
    for name in ("accuracy range", "tau, even vs odd half", "predictor held-out tau (full split)"):
        out.add_column(name, justify="right")
    out.add_row(
        f"{100 * full.min():.1f}-{100 * full.max():.1f}%",
        f"{summary['split_half_kendall_tau']:.3f}",
        "-" if predictor_tau is None else f"{predictor_tau:.3f}",
    )
    console.print(out)
    console.print(
        "Two independent half-size measurements of the same sub-networks rank them with the tau above; "
        f"the table's accuracies are reproduced to {summary['max_abs_diff_vs_table']:.4f}."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    console.print(f"written: {atomic_write_json(args.out / 'summary.json', summary)}")


if __name__ == "__main__":
    main()
