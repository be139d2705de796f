"""Small real tables for predictor tests: analytic costs of sampled sub-networks (counted by
`ofa.networks`), slices of the shared GPU measurements, and a per-layer MACs lookup table."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ofa.io import atomic_write_csv
from ofa.networks import count_macs, count_params, layer_costs
from ofa.space import ArchConfig, MBV3Space

GPU_TABLE = "ofa_mbv3_gpu_latency.csv"


def sample_archs(space: MBV3Space, n: int, seed: int = 0) -> list[ArchConfig]:
    g = torch.Generator().manual_seed(seed)
    return [space.sample(g) for _ in range(n)]


def write_cost_table(path: Path, space: MBV3Space, n: int, seed: int = 0) -> Path:
    """`ks,e,d,r,macs,params,mmacs` of `n` sampled sub-networks (as ofa-eval-subnets writes them)."""
    rows = []
    for arch in sample_archs(space, n, seed):
        macs, params = count_macs(space, arch), count_params(space, arch)
        rows.append({**arch.to_csv_fields(), "macs": macs, "params": params, "mmacs": macs / 1e6})
    return atomic_write_csv(path, rows, ["ks", "e", "d", "r", "macs", "params", "mmacs"])


def write_macs_lut(path: Path, space: MBV3Space, archs: list[ArchConfig]) -> Path:
    """lut.csv whose per-layer 'latency' is the layer's MACs in millions."""
    lut = {c.shape: c.macs / 1e6 for a in archs for c in layer_costs(space, a)}
    return atomic_write_csv(path, [{"shape": s, "latency_ms": v} for s, v in lut.items()], ["shape", "latency_ms"])


def write_gpu_slice(shared_data: Path, path: Path, rows: int, start: int = 0) -> Path:
    with open(shared_data / GPU_TABLE, newline="") as f:
        reader = csv.DictReader(f)
        data = list(reader)[start : start + rows]
        return atomic_write_csv(path, data, reader.fieldnames)
