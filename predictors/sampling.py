"""Which sub-networks to measure: spread over the MACs range, smallest and largest included.

Uniformly random archs crowd the middle of the MACs range (on the MNIST space: 21-94 MMACs
out of 16-143), so a predictor fitted on them extrapolates at both ends. Instead a pool is
drawn with a per-arch bias towards small or large choices, and the archs nearest to evenly
spaced MACs targets are kept (`sample_spread`, ofa-profile's `strategy=spread`).

For a device onboarded from others (`strategy=transfer`, predictors.transfer), `sample_for_transfer`
picks from such a pool the archs that a linear model on the sources' predicted latencies and
the compact cost features knows least about, one after another (a D-optimal design). The
first n of n + m are the n: measuring more later extends the same design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ofa.errors import check_int
from ofa.networks.costs import count_macs
from ofa.space import ArchConfig, MBV3Space
from predictors.features import to_arrays
from predictors.transfer import choose_measurements, compact_features


def _biased_choice(rng: np.random.Generator, choices: tuple[int, ...], tilt: float, size: int) -> list[int]:
    """Choices drawn with weights exp(tilt * centred rank): tilt < 0 favours small ones."""
    ranks = np.arange(len(choices)) - (len(choices) - 1) / 2
    weights = np.exp(tilt * ranks)
    idx = rng.choice(len(choices), size=size, p=weights / weights.sum())
    return [choices[i] for i in idx]


def biased_sample(space: MBV3Space, rng: np.random.Generator, strength: float = 6.0) -> ArchConfig:
    """A random arch whose choices all lean one way, by a tilt drawn uniformly in [-strength/2, strength/2]."""
    tilt = (rng.random() - 0.5) * strength
    return ArchConfig(
        ks=_biased_choice(rng, space.kernel_sizes, tilt, space.n_slots),
        e=_biased_choice(rng, space.expand_ratios, tilt, space.n_slots),
        d=_biased_choice(rng, space.depths, tilt, space.n_stages),
        r=_biased_choice(rng, space.resolutions, tilt, 1)[0],
    )


def check_spread_count(n: Any, name: str = "n_subnets") -> None:
    """A spread needs the smallest and the largest: at least 2 sub-networks."""
    check_int(name, n, 2, "an integer >= 2 (the smallest and the largest are always in)")


def sample_spread(space: MBV3Space, n: int, seed: int = 0, pool_factor: int = 20) -> list[ArchConfig]:
    """`n` distinct archs spread evenly over the MACs range: the smallest, the largest, and the
    pool archs nearest to `n - 2` evenly spaced MACs targets between them. Deterministic in
    `seed`; returned in increasing MACs."""
    check_spread_count(n)
    total = space.count_subnets()
    if n > total:
        raise ValueError(f"n_subnets = {n} is more than the {total} sub-networks of this space")
    rng = np.random.default_rng(seed)
    smallest, largest = space.smallest(), space.largest()
    lo, hi = count_macs(space, smallest), count_macs(space, largest)
    pool: dict[ArchConfig, int] = {}
    for _ in range(pool_factor * n + 200):
        arch = biased_sample(space, rng)
        if arch not in pool and arch not in (smallest, largest):
            pool[arch] = count_macs(space, arch)
    chosen = [smallest, largest]
    candidates = sorted(pool.items(), key=lambda item: item[1])
    macs = np.array([m for _, m in candidates], dtype=float)
    used = np.zeros(len(candidates), dtype=bool)
    for target in np.linspace(lo, hi, n)[1:-1]:
        order = np.argsort(np.abs(macs - target), kind="stable")
        pick = next((int(i) for i in order if not used[i]), None)
        if pick is None:
            break
        used[pick] = True
        chosen.append(candidates[pick][0])
    if len(chosen) < n:
        raise ValueError(f"could only find {len(chosen)} distinct sub-networks; ask for fewer than {n}")
    return sorted(chosen, key=lambda a: count_macs(space, a))


def pool_archs(space: MBV3Space, n: int, seed: int, extra: Sequence[ArchConfig] = ()) -> list[ArchConfig]:
    """`n` distinct sub-networks drawn with a per-arch bias towards small or large choices (the
    whole MACs range), the smallest and the largest among them, then `extra`; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    pool = dict.fromkeys([space.smallest(), space.largest()])
    for _ in range(20 * n):
        if len(pool) >= n:
            break
        pool[biased_sample(space, rng)] = None
    pool.update(dict.fromkeys(extra))
    return list(pool)


def sample_for_transfer(
    space: MBV3Space,
    n: int,
    seed: int,
    source_latencies: Callable[[Sequence[ArchConfig]], np.ndarray] | None,
    pool: int = 3000,
) -> list[ArchConfig]:
    """`n` distinct archs to measure on a new device whose predictor will be transferred from
    sources whose (positive) predicted latencies `source_latencies(archs)` gives, (len(archs), k)
    (e.g. `functools.partial(predictors.transfer_sources.source_latencies, sources)`; None: no
    sources), by `predictors.transfer.choose_measurements` on a `pool_archs` pool, in the order
    chosen. Deterministic in `seed`; the first n of a larger n are the same."""
    check_int("n_subnets", n, 2)
    if n > pool:
        raise ValueError(f"n_subnets = {n} is more than the pool of {pool} sub-networks the design picks from")
    archs = pool_archs(space, pool, seed)
    S = None if source_latencies is None else source_latencies(archs)
    chosen = choose_measurements(n, seed, S, compact_features(to_arrays(archs, space), space), pool=len(archs))
    return [archs[i] for i in chosen]


def reference_arch(space: MBV3Space) -> ArchConfig:
    """The middle sub-network (median choice everywhere): re-measured in every group to
    detect drift of the machine's speed over a long run."""

    def mid(values: tuple[int, ...]) -> int:
        return values[(len(values) - 1) // 2]

    return space.uniform(mid(space.kernel_sizes), mid(space.expand_ratios), mid(space.depths), mid(space.resolutions))


def macs_coverage(space: MBV3Space, archs: list[ArchConfig], bins: int = 10) -> float:
    """Share of `bins` equal-width MACs bins (smallest..largest) holding at least one arch."""
    lo, hi = count_macs(space, space.smallest()), count_macs(space, space.largest())
    hit = {min(bins - 1, math.floor((count_macs(space, a) - lo) / (hi - lo) * bins)) for a in archs}
    return len(hit) / bins
