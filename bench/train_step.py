"""Milliseconds per supernet training step: the path training used before (NCHW, oneDNN's
depthwise backward) against the new default (channels-last, large depthwise weight gradients
by the compiled C kernel of `ofa.kernels.compiled`), with the steps between them (channels-last
alone; channels-last with the weight gradient as a grouped convolution, the default until the
C kernel), side by side in the same run.

One step is what an elastic phase of the shipped schedules trains: the largest, the smallest
and two random sub-networks (fixed for the run), each forward + loss (in-place distillation
from the largest's detached logits) + backward. The largest alone is timed too (the issue's
first profile). Forward and backward are timed separately.
Paths alternate within each round (the order rotates); ratios are per round, median and
p10-p90. After the timings, one profiled step per path lists its top kernels.

    .venv/bin/python bench/train_step.py [--rounds 7] [--cases mnist w10] [--top 6]

Its last line ends with the default space's speed-up (`speed-up <ratio>x`).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from rich.table import Table

from app.shell import make_console
from ofa.evaluation import resize
from ofa.kernels import compiled
from ofa.kernels.batch_norm_act import fused_batch_norm
from ofa.kernels.depthwise import weight_grad_path
from ofa.networks import OFAMobileNetV3
from ofa.space import ArchConfig, get_space
from ofa.training.module import soft_cross_entropy
from predictors.measure.timing import paired_ratios, quantiles


@dataclass(frozen=True)
class Case:
    name: str
    space: str
    resolution: int
    batch: int


CASES = {
    # 24 px: the middle of the space's 16/24/32 (a training step's mean pixel count is 24.9^2)
    "mnist": Case("mnist (the default space)", "mnist", 24, 64),
    "w10": Case("ofa_mbv3_w10", "ofa_mbv3_w10", 128, 16),
}
# name -> (weights in channels-last, how large depthwise weight gradients are computed, fused BN)
PATHS = {
    "before": (False, "native", False),
    "channels-last": (True, "native", False),
    "+ grad as conv": (True, "conv", False),
    "+ compiled grad": (True, "compiled", False),
    "new default": (True, "compiled", True),
}


@contextmanager
def path(supernet: OFAMobileNetV3, name: str) -> Iterator[None]:
    channels_last, weight_grad, fused_bn = PATHS[name]
    supernet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with weight_grad_path(weight_grad), fused_batch_norm(fused_bn):
        yield


def step_archs(supernet: OFAMobileNetV3, r: int, seed: int) -> list[ArchConfig]:
    space, g = supernet.space, torch.Generator().manual_seed(seed)
    return [space.largest(r), space.smallest(r), space.sample(g, r=r), space.sample(g, r=r)]


def train_step(
    supernet: OFAMobileNetV3, archs: list[ArchConfig], x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """One sandwich step as `SupernetModule.training_step` runs it; (forward s, backward s)."""
    clock = time.perf_counter
    forward = backward = 0.0
    supernet.zero_grad(set_to_none=True)
    target = None
    for arch in archs:
        t0 = clock()
        supernet.set_active_subnet(arch)
        logits = supernet(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        if target is None:
            target = logits.detach()  # the largest teaches the others in place
        else:
            loss = loss + soft_cross_entropy(logits, target, 1.0)
        t1 = clock()
        (loss / len(archs)).backward()
        forward, backward = forward + t1 - t0, backward + clock() - t1
    return forward, backward


def time_paths(supernet, archs, x, y, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per path: per-round forward, backward and total ms (one warm-up step per path first)."""
    names = list(PATHS)
    times = {n: {"forward": [], "backward": [], "step": []} for n in names}
    for n in names:
        with path(supernet, n):
            train_step(supernet, archs, x, y)
    for i in range(rounds):
        for n in names[i % len(names) :] + names[: i % len(names)]:
            with path(supernet, n):
                f, b = train_step(supernet, archs, x, y)
            times[n]["forward"].append(1e3 * f)
            times[n]["backward"].append(1e3 * b)
            times[n]["step"].append(1e3 * (f + b))
    return times


def top_kernels(supernet, archs, x, y, top: int) -> dict[str, list[tuple[str, float, float]]]:
    """Per path: (op, ms in one step, share of the step) of the `top` ops by self CPU time."""
    out = {}
    for n in PATHS:
        with path(supernet, n):
            train_step(supernet, archs, x, y)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                train_step(supernet, archs, x, y)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        out[n] = [(e.key, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / total) for e in events[:top]]
    return out


def median(values: list[float]) -> float:
    return quantiles(values, (0.5,))[0]


def run_case(case: Case, args: argparse.Namespace, console) -> float:
    """Both steps of one case, timed and tabled; returns the sandwich step's median speed-up."""
    torch.manual_seed(args.seed)
    supernet = OFAMobileNetV3(space=get_space(case.space)).train()
    space = supernet.space
    archs = step_archs(supernet, case.resolution, args.seed)
    x = resize(torch.randn(case.batch, space.in_channels, case.resolution, case.resolution), case.resolution)
    y = torch.randint(0, space.num_classes, (case.batch,))
    steps = {"sandwich x4": archs, "largest": archs[:1]}

    table = Table(title=f"{case.name}: batch {case.batch}, {case.resolution} px, ms per training step")
    for col in ("step", "path", "step ms (p10-p90)", "forward", "backward", "bwd / fwd", "speed-up (p10-p90)"):
        table.add_column(col, justify="right")
    speedups = {}
    for step, step_set in steps.items():
        times = time_paths(supernet, step_set, x, y, args.rounds)
        for n, t in times.items():
            p10, p50, p90 = quantiles(paired_ratios(times["before"]["step"], t["step"]), (0.1, 0.5, 0.9))
            speedups[step, n] = p50
            f, b = median(t["forward"]), median(t["backward"])
            s10, s90 = quantiles(t["step"], (0.1, 0.9))
            table.add_row(step, n, f"{median(t['step']):.0f} ({s10:.0f}-{s90:.0f})", f"{f:.0f}", f"{b:.0f}",
                          f"{b / f:.2f}", f"{p50:.2f}x ({p10:.2f}-{p90:.2f})")  # fmt: skip
    console.print(table)
    if args.top:
        kernels = Table(title=f"{case.name}: top kernels of one profiled sandwich step (self CPU time)")
        for col in ("path", "op", "ms", "share"):
            kernels.add_column(col, justify="right" if col in ("ms", "share") else "left")
        for n, rows in top_kernels(supernet, archs, x, y, args.top).items():
            for op, ms, share in rows:
                kernels.add_row(n, op, f"{ms:.1f}", f"{100 * share:.0f}%")
        console.print(kernels)
    return speedups["sandwich x4", "new default"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["mnist", "w10"])
    parser.add_argument("--top", type=int, default=6, help="kernels listed per path (0: no profile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=None, help="input px of every case (default: the case's)")
    args = parser.parse_args()
    console = make_console()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{args.rounds} interleaved rounds"
    )
    if compiled.library() is None:
        console.print("[yellow]the compiled kernel did not build: 'new default' is '+ grad as conv' here[/]")
    px = args.resolution
    cases = {c: CASES[c] if px is None else replace(CASES[c], resolution=px) for c in args.cases}
    speedups: dict[str, float] = {c: run_case(case, args, console) for c, case in cases.items()}
    for c, ratio in speedups.items():
        if c != "mnist":
            console.print(f"{CASES[c].name} sandwich step, new default vs before: speed-up {ratio:.2f}x")
    if "mnist" in speedups:
        ratio = speedups["mnist"]
        console.print(f"default space (mnist, batch 64) sandwich step, new default vs before: speed-up {ratio:.2f}x")


if __name__ == "__main__":
    main()
