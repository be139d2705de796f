"""Vectorised encodings of `ArchConfig`s against an `MBV3Space`.

Two families, concatenated by `encode`:
- one-hot per block slot (kernel, expand; a skipped slot is all zeros, as OFA's arch
  encoder) plus one-hot resolution;
- analytic features from `ofa.networks.layer_costs`: MACs, parameters and activation traffic
  per stage, depths, resolution and resolution-scaled terms, so that a linear model can
  express costs that grow with the number of pixels (resolution squared).

A block's cost depends only on its slot, the resolution, its kernel and its expand ratio (its
input width and map side follow from the slot and the resolution), so `cost_tables` computes
every (slot, resolution, kernel, expand) once per space through `layer_costs` and encoding a
batch is array indexing. Bump `FEATURE_VERSION` whenever an encoding changes: saved
predictors record it and are refused under another version.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ofa.networks import layer_costs
from ofa.networks.mobilenet_v3 import block_specs
from ofa.space import ArchConfig, MBV3Space

FEATURE_VERSION = 1
FEATURE_SETS = ("onehot", "analytic", "all")
_FIXED = ("stem", "first_block", "final_expand", "feature_mix", "classifier")


@dataclass(frozen=True)
class ArchArrays:
    """A batch of configs as integer arrays: `ks`, `e` (n, slots; 0 = skipped), `d` (n, stages), `r` (n,)."""

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return len(self.r)

    @property
    def active(self) -> np.ndarray:
        return self.ks > 0

    def take(self, rows: np.ndarray) -> ArchArrays:
        """The configs at `rows` (an index array or boolean mask)."""
        return ArchArrays(self.ks[rows], self.e[rows], self.d[rows], self.r[rows])


@dataclass(frozen=True)
class CostTables:
    """Per-block costs indexed [slot, resolution index, kernel index, expand index], and the
    fixed layers' (stem, first block, head) costs per resolution index."""

    macs: np.ndarray
    params: np.ndarray
    traffic: np.ndarray  # activation elements read + written: a memory-bandwidth proxy
    shape_id: np.ndarray  # index into `shapes`: what a latency lookup table keys on
    fixed_macs: np.ndarray
    fixed_params: np.ndarray
    fixed_shape_id: np.ndarray  # [resolution index, fixed layer]
    shapes: tuple[str, ...]


def _side(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


@functools.lru_cache(maxsize=16)
def cost_tables(space: MBV3Space) -> CostTables:
    """Costs of every block choice at every slot and resolution, from `layer_costs` itself."""
    n_r, n_k, n_e = len(space.resolutions), len(space.kernel_sizes), len(space.expand_ratios)
    shape = (space.n_slots, n_r, n_k, n_e)
    macs, params, traffic = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    shape_id = np.zeros(shape, dtype=np.int64)
    fixed_macs, fixed_params = np.zeros(n_r), np.zeros(n_r)
    fixed_shape_id = np.zeros((n_r, len(_FIXED)), dtype=np.int64)
    index: dict[str, int] = {}
    depth = max(space.depths)
    for ri, r in enumerate(space.resolutions):
        for ki, k in enumerate(space.kernel_sizes):
            for ei, e in enumerate(space.expand_ratios):
                arch = space.uniform(k, e, depth, r)  # every slot active
                costs = layer_costs(space, arch)
                blocks = [c for c in costs if c.name.startswith("block")]
                side = _side(_side(r, space.stem_stride), 1)
                for slot, (cost, spec) in enumerate(zip(blocks, block_specs(space, arch))):
                    out = _side(side, spec["stride"])
                    cin, mid, cout = spec["in_channels"], spec["mid_channels"], spec["out_channels"]
                    macs[slot, ri, ki, ei] = cost.macs
                    params[slot, ri, ki, ei] = cost.params
                    traffic[slot, ri, ki, ei] = side * side * (cin + 2 * mid) + out * out * (2 * mid + cout)
                    shape_id[slot, ri, ki, ei] = index.setdefault(cost.shape, len(index))
                    side = out
                fixed = {c.name: c for c in costs if not c.name.startswith("block")}
                fixed_macs[ri] = sum(c.macs for c in fixed.values())
                fixed_params[ri] = sum(c.params for c in fixed.values())
                fixed_shape_id[ri] = [index.setdefault(fixed[n].shape, len(index)) for n in _FIXED]
    return CostTables(
        macs, params, traffic, shape_id, fixed_macs, fixed_params, fixed_shape_id, tuple(sorted(index, key=index.get))
    )


def to_arrays(archs: Sequence[ArchConfig], space: MBV3Space) -> ArchArrays:
    """Stack configs into arrays and check every value against the space (vectorised)."""
    archs = list(archs)
    for i, a in enumerate(archs):
        if not isinstance(a, ArchConfig):
            raise ValueError(f"archs[{i}] is a {type(a).__name__}, not an ArchConfig")
    n = len(archs)
    slots, stages = space.n_slots, space.n_stages
    try:
        ks = np.array([a.ks for a in archs], dtype=np.int64).reshape(n, slots)
        e = np.array([a.e for a in archs], dtype=np.int64).reshape(n, slots)
        d = np.array([a.d for a in archs], dtype=np.int64).reshape(n, stages)
    except ValueError:
        for a in archs:  # some config has another number of slots or stages
            space.validate(a)  # raises the space's own one-line message
        raise
    r = np.array([a.r for a in archs], dtype=np.int64).reshape(n)
    arrays = ArchArrays(ks, e, d, r)
    active = arrays.active
    ok = (
        np.isin(d, space.depths).all(axis=1)
        & (~active | np.isin(ks, space.kernel_sizes)).all(axis=1)
        & (~active | np.isin(e, space.expand_ratios)).all(axis=1)
        & np.isin(r, space.resolutions)
    )
    if not ok.all():
        space.validate(archs[int(np.argmin(ok))])  # raises a one-line message naming field and value
    return arrays


def _index(values: np.ndarray, choices: Sequence[int]) -> np.ndarray:
    """Position of each value in the sorted `choices` (0 for skipped slots; mask them)."""
    return np.clip(np.searchsorted(np.asarray(choices), values), 0, len(choices) - 1)


def onehot_features(arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
    """OFA's arch encoding: per slot one-hot kernel then one-hot expand (skipped = zeros), then one-hot r."""
    n, slots = arrays.ks.shape
    n_k, n_e, n_r = len(space.kernel_sizes), len(space.expand_ratios), len(space.resolutions)
    active = arrays.active
    k_hot = np.zeros((n, slots, n_k))
    e_hot = np.zeros((n, slots, n_e))
    rows, cols = np.nonzero(active)
    k_hot[rows, cols, _index(arrays.ks, space.kernel_sizes)[rows, cols]] = 1.0
    e_hot[rows, cols, _index(arrays.e, space.expand_ratios)[rows, cols]] = 1.0
    r_hot = np.zeros((n, n_r))
    r_hot[np.arange(n), _index(arrays.r, space.resolutions)] = 1.0
    return np.concatenate([np.concatenate([k_hot, e_hot], axis=2).reshape(n, -1), r_hot], axis=1)


def block_lookup(arrays: ArchArrays, space: MBV3Space, table: np.ndarray) -> np.ndarray:
    """Per-slot values of a [slot, r, k, e] table for each config (0 at skipped slots)."""
    slots = np.arange(arrays.ks.shape[1])[None, :]
    ri = _index(arrays.r, space.resolutions)[:, None]
    values = table[slots, ri, _index(arrays.ks, space.kernel_sizes), _index(arrays.e, space.expand_ratios)]
    return np.where(arrays.active, values, 0)


def analytic_names(space: MBV3Space) -> list[str]:
    per_stage = ["macs", "params", "traffic", "depth", "depth_x_px"]
    return [
        "macs",
        "params",
        "traffic",
        "fixed_macs",
        "blocks",
        "r",
        "px",
        *[f"{name}_s{s}" for name in per_stage for s in range(space.n_stages)],
    ]


def analytic_features(arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
    """MACs, params and traffic (total and per stage, in millions), depths, resolution, and
    pixel-count terms (`px` = (r / max r)^2; depth x px per stage) so cost can scale with r^2."""
    t = cost_tables(space)
    n, slots = arrays.ks.shape
    ri = _index(arrays.r, space.resolutions)
    per_stage = lambda x: x.reshape(n, space.n_stages, slots // space.n_stages).sum(axis=2)  # noqa: E731
    macs = per_stage(block_lookup(arrays, space, t.macs)) / 1e6
    params = per_stage(block_lookup(arrays, space, t.params)) / 1e6
    traffic = per_stage(block_lookup(arrays, space, t.traffic)) / 1e6
    fixed_macs = t.fixed_macs[ri] / 1e6
    fixed_params = t.fixed_params[ri] / 1e6
    depth = arrays.d.astype(np.float64)
    px = (arrays.r / max(space.resolutions)) ** 2
    columns = [
        macs.sum(1) + fixed_macs,
        params.sum(1) + fixed_params,
        traffic.sum(1),
        fixed_macs,
        depth.sum(1),
        arrays.r / max(space.resolutions),
        px,
    ]
    stacked = np.column_stack(columns)
    return np.concatenate([stacked, macs, params, traffic, depth, depth * px[:, None]], axis=1)


def encode(arrays: ArchArrays, space: MBV3Space, feature_set: str = "all") -> np.ndarray:
    """Feature matrix (n, features), float64, of one of `FEATURE_SETS`."""
    if feature_set == "onehot":
        return onehot_features(arrays, space)
    if feature_set == "analytic":
        return analytic_features(arrays, space)
    if feature_set == "all":
        return np.concatenate([onehot_features(arrays, space), analytic_features(arrays, space)], axis=1)
    raise ValueError(f"feature_set = {feature_set!r} is not allowed; allowed: {', '.join(FEATURE_SETS)}")


def total_macs(arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
    """MACs of each config, as `ofa.networks.count_macs` counts them."""
    t = cost_tables(space)
    return block_lookup(arrays, space, t.macs).sum(1) + t.fixed_macs[_index(arrays.r, space.resolutions)]


def total_params(arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
    t = cost_tables(space)
    return block_lookup(arrays, space, t.params).sum(1) + t.fixed_params[_index(arrays.r, space.resolutions)]
