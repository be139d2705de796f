"""Predictor throughput: archs per second of each model kind on one batch of 10,000 configs.

Fits each model (ridge, trees, the small latency MLP, OFA's 3x400 accuracy MLP, the lookup
table) with its default settings on the analytic MACs of 2,000 sampled configs (the speed of
`predict` does not depend on what was learned), then times `Predictor.predict` on the same
10,000 configs in interleaved rounds (the whole call: ArchConfig -> arrays -> features ->
model). Also times the encoding alone. Prints median and p10-p90 across rounds.

    .venv/bin/python bench/predictor_speed.py [--batch 10000] [--rounds 7] [--space ofa_mbv3_w10]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from rich.table import Table

from app.shell import make_console
from ofa.networks import layer_costs
from ofa.space import get_space
from predictors.features import encode, to_arrays
from predictors.measure.timing import TimingStats, interleaved_rounds
from predictors.models import GBTModel, LUTModel, MLPModel, RidgeModel
from predictors.predictor import Predictor


def macs_lut(space) -> dict[str, float]:
    """Per-layer MACs (millions) of every layer shape in the space, as a stand-in lookup table."""
    lut = {}
    for r in space.resolutions:
        for k in space.kernel_sizes:
            for e in space.expand_ratios:
                for c in layer_costs(space, space.uniform(k, e, max(space.depths), r)):
                    lut[c.shape] = c.macs / 1e6
    return lut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--space", default="ofa_mbv3_w10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    console = make_console()
    space = get_space(args.space)
    g = torch.Generator().manual_seed(args.seed)
    train = [space.sample(g) for _ in range(args.train)]
    batch = [space.sample(g) for _ in range(args.batch)]
    train_arrays = to_arrays(train, space)
    y = np.array([sum(c.macs for c in layer_costs(space, a)) for a in train]) / 1e6
    models = {
        "ridge (all features)": (RidgeModel("all"), "none"),
        "gbt (ridge + 600 trees, d4)": (GBTModel("all"), "none"),
        "mlp 64x64 (latency)": (MLPModel("analytic", (64, 64), epochs=20), "log"),
        "mlp 3x400 (OFA accuracy)": (MLPModel("onehot", (400, 400, 400), epochs=2), "none"),
        "lut (per-layer sum)": (LUTModel(macs_lut(space)), "none"),
    }
    predictors = {}
    with console.status("fitting one predictor of each kind"):
        for name, (model, transform) in models.items():
            predictors[name] = Predictor(space, "mmacs", model, transform).fit_arrays(train_arrays, y)
    calls = {name: (lambda p=p: p.predict(batch)) for name, p in predictors.items()}
    calls["encode only (all features)"] = lambda: encode(to_arrays(batch, space), space, "all")

    console.print(
        f"predict on {args.batch:,} configs of {space.name}, {args.rounds} interleaved rounds, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    rounds = interleaved_rounds(calls, rounds=args.rounds, calls_per_round=1, warmup_calls=1)
    table = Table(title=f"predictor throughput on a batch of {args.batch:,} configs")
    for col in ("predictor", "ms per batch (median)", "p10-p90 ms", "archs/s (median)", "archs/s p10-p90"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for name, values in rounds.items():
        s = TimingStats.from_rounds(values)
        rate = lambda ms: args.batch / (ms / 1e3)  # noqa: E731
        table.add_row(
            name,
            f"{s.median_ms:.1f}",
            f"{s.p10_ms:.1f}-{s.p90_ms:.1f}",
            f"{rate(s.median_ms):,.0f}",
            f"{rate(s.p90_ms):,.0f}-{rate(s.p10_ms):,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
