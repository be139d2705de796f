"""Cost of running a sub-network inside the supernet instead of as the extracted static net.

For random archs at each resolution, times the supernet (arch active) and the extracted
static network side by side in interleaved rounds, for the eval forward and for one
training step (forward + loss + backward). Prints per-round ratios supernet / static:
median and p10-p90 over all rounds of all archs.

    .venv/bin/python bench/elastic_overhead.py [--archs 4] [--rounds 5] [--batch 16] [--memory-format contiguous]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
import torch.nn.functional as F
from rich.table import Table

from app.shell import make_console
from ofa.networks import OFAMobileNetV3
from predictors.measure.timing import interleaved_rounds, paired_ratios, quantiles


def eval_call(net: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.inference_mode():
            net(x)

    return run


def train_call(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    def run() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=4, help="random archs per resolution")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="calls per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    args = parser.parse_args()
    fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format

    console = make_console()
    torch.manual_seed(args.seed)
    supernet = OFAMobileNetV3().to(memory_format=fmt)
    generator = torch.Generator().manual_seed(args.seed)
    console.print(
        f"OFA-MobileNetV3 w1.0, batch {args.batch}, {args.archs} random archs per resolution, "
        f"{args.rounds} rounds x {args.calls} calls, {args.memory_format}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    table = Table(title="supernet (active sub-network) / extracted static network, per-round ratios")
    for col in ("resolution", "mode", "ratio median", "ratio p10-p90", "supernet ms", "static ms", "rounds"):
        table.add_column(col, justify="right")

    for r in args.resolutions:
        ratios: dict[str, list[float]] = {"eval": [], "train step": []}
        times: dict[str, dict[str, list[float]]] = {m: {"super": [], "static": []} for m in ratios}
        for i in range(args.archs):
            arch = supernet.space.sample(generator, r=r)
            supernet.set_active_subnet(arch)
            static = supernet.extract_subnet(arch).to(memory_format=fmt)
            x = torch.randn(args.batch, 3, r, r).contiguous(memory_format=fmt)
            y = torch.randint(0, 1000, (args.batch,))
            for mode in ratios:
                for net in (supernet, static):
                    net.train(mode != "eval")
                if mode == "eval":
                    cands = {"super": eval_call(supernet, x), "static": eval_call(static, x)}
                else:
                    cands = {"super": train_call(supernet, x, y), "static": train_call(static, x, y)}
                res = interleaved_rounds(cands, rounds=args.rounds, calls_per_round=args.calls, warmup_calls=1)
                ratios[mode] += paired_ratios(res["super"], res["static"])
                for k in res:
                    times[mode][k] += res[k]
            console.print(f"  r={r} arch {i + 1}/{args.archs}: {arch}")
        for mode, values in ratios.items():
            p10, p50, p90 = quantiles(values, (0.1, 0.5, 0.9))
            table.add_row(
                str(r),
                mode,
                f"{p50:.3f}",
                f"{p10:.3f}-{p90:.3f}",
                f"{statistics.median(times[mode]['super']):.1f}",
                f"{statistics.median(times[mode]['static']):.1f}",
                str(len(values)),
            )
    console.print(table)


if __name__ == "__main__":
    main()
