"""Test-retest of a device profile: the same sub-networks profiled twice, then compared.

Runs two complete, independent `ofa-profile` measurements (each with its own warm-up,
interleaved groups and reference, the second in another order) of the same N sub-networks
spread over the MACs range, and prints Kendall tau between the two runs and the relative
differences. The issue's bar on `cpu-ort`: tau >= 0.9 and median relative difference <= 5%.
The tau is the ceiling any latency predictor can reach on this device.

    .venv/bin/python bench/profile_repeatability.py [--device cpu-ort] [--n 30] [--seed 0]
        [--out runs/repeatability/<time>] [--set timing.rounds=5 ...]

The two tables and `summary.json` are written to --out (not to the profile's folder).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from datetime import datetime
from pathlib import Path

import yaml
from rich.table import Table

from app.profile import build_supernet
from app.progress import progress_bar
from app.shell import REPO_ROOT, make_console
from ofa.io import atomic_write_json
from predictors.measure.profile import HW_PROFILES_DIR, load_profile
from predictors.measure.timing import STATISTICS
from predictors.profiling import profile_subnets
from predictors.repeatability import compare_runs
from predictors.sampling import sample_spread

TAU_BAR, REL_DIFF_BAR = 0.9, 0.05


def parse_sets(items: list[str]) -> dict:
    """`section.field=value` pairs (values parsed as YAML) into a nested dict."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu-ort")
    parser.add_argument("--n", type=int, default=30, help="sub-networks (smallest and largest included)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profiles-dir", type=Path, default=HW_PROFILES_DIR)
    parser.add_argument("--cache", type=Path, default=None, help="ONNX/engine cache (default: <out>/cache, removed)")
    parser.add_argument("--set", action="append", default=[], help="profile field override, e.g. timing.rounds=5")
    return parser.parse_args()


def profile_twice(args: argparse.Namespace, profile, out: Path, console) -> list[float]:
    """Two complete runs into out/run1.csv and out/run2.csv; their wall times."""
    supernet = build_supernet(profile.supernet, args.seed)
    archs = sample_spread(supernet.space, args.n, args.seed)
    console.print(f"test-retest on [bold]{profile.name}[/]: {len(archs)} sub-networks, two runs")
    walls = []
    for run in (1, 2):
        start = time.perf_counter()
        # The second run reuses the first's ONNX exports (kept in out/cache): only measurement repeats.
        with progress_bar(console, f"run {run}: measuring on {profile.name}") as on_progress:
            profile_subnets(
                profile,
                supernet,
                archs,
                out / f"run{run}.csv",
                args.cache or out / "cache",
                seed=args.seed + run,
                on_progress=on_progress,
                backend_kwargs={"keep_exports": True},
            )
        walls.append(time.perf_counter() - start)
    if args.cache is None:
        shutil.rmtree(out / "cache", ignore_errors=True)
    return walls


def comparison_table(title: str, summaries: dict) -> Table:
    table = Table(title=title)
    headers = ("figure", "Kendall tau", "median |rel diff|", "p90 |rel diff|", "max |rel diff|", "median run2/run1")
    for col in headers:
        table.add_column(col, justify="right")
    for name, s in summaries.items():
        table.add_row(
            name,
            f"{s.kendall_tau:.3f}",
            f"{s.median_rel_diff:.2%}",
            f"{s.p90_rel_diff:.2%}",
            f"{s.max_rel_diff:.2%}",
            f"{s.ratio_median:.3f}",
        )
    return table


def main() -> None:
    args = parse_args()
    console = make_console()
    out = args.out or REPO_ROOT / "runs" / "repeatability" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    profile = load_profile(args.device, root=args.profiles_dir, overrides=parse_sets(args.set))
    walls = profile_twice(args, profile, out, console)
    rows1, rows2 = read(out / "run1.csv"), read(out / "run2.csv")
    # Every figure comes from the same calls of the same two runs, compared side by side: the raw
    # median (the usual summary), the raw floor, and latency_ms as the profile reports it.
    label = rows1[0]["latency_stat"]
    columns = {f"{stat} (raw)": f"latency_{stat}_ms" for stat in STATISTICS}
    columns[f"latency_ms: {label} (the profile's)"] = "latency_ms"
    summaries = {name: compare_runs(rows1, rows2, column) for name, column in columns.items()}
    summary = summaries[f"latency_ms: {label} (the profile's)"]
    verdict = summary.kendall_tau >= TAU_BAR and summary.median_rel_diff <= REL_DIFF_BAR
    console.print(comparison_table(f"{profile.name}: run 2 vs run 1, {summary.n} sub-networks", summaries))
    refs = [sorted({float(r["ref_latency_ms"]) for r in rows}) for rows in (rows1, rows2)]
    console.print(
        "reference sub-network per group (raw, ms): "
        + "; ".join(f"run {i + 1} {min(r):.3f}-{max(r):.3f}" for i, r in enumerate(refs))
    )
    console.print(
        f"bar (tau >= {TAU_BAR}, median |rel diff| <= {REL_DIFF_BAR:.0%}) on the profile's latency_ms ({label}): "
        f"{'met' if verdict else 'not met'}"
    )
    result = {
        "device": profile.name,
        "backend": profile.backend,
        "precision": profile.precision,
        "latency_stat": label,
        "n_subnets": args.n,
        "seed": args.seed,
        **summary.to_dict(),
        "by_figure": {name: s.to_dict() for name, s in summaries.items()},
        "bar_met": verdict,
        "wall_s": [round(w, 1) for w in walls],
    }
    atomic_write_json(out / "summary.json", result)
    console.print(f"written: {out / 'run1.csv'}, {out / 'run2.csv'}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
