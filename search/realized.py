"""What the loop's own picks realized against what its models claimed for them.

The accuracy trees overstate the upside of cells they believe well below a budget's best: on
NAS-Bench-201 38 % of the loop's picks were believed 1.5 points or more below the incumbent;
the trees gave them 11-12 % to beat it, and 1 % did (`bench/README.md#loop_ceilingpy`, stop
37). A global tempering of the trees' tails cost Q = 100 and could stall a run. This acts per
run instead: each pick is filed in a band of (ensemble mean - the budget's best measured
objective) with its claimed chance of a gain (P(meets) x the trees' mean chance to beat),
and once measured, whether it gained (met the budget and beat that best). Per band the loop
then scales a candidate's expected gain by (gains + 1) / (claimed + 1), at most 1: a band
whose picks realize what was claimed keeps its value, one that realizes a tenth loses up to
nine tenths (`FLOOR`). The "+ 1" keeps a band near 1 until its picks have claimed a gain or more.

The loop applies it from three picks per budget and round (`search.loop.REALIZED_MIN_PICKS`):
Q = 300 on twelve devices no rule was tuned on 0.034 against 0.043 points of regret (15 seeds);
with two (Q <= 100) the bands rest on a few picks and it cut the exploration those runs need
(`bench/README.md`, stop 39). Only the loop's own picks count: a resumed loop starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

# Band edges of (ensemble mean - incumbent), in points of the objective (1 point = 0.01 of an
# accuracy given as a fraction): far below, a little below, level or above.
EDGES_POINTS = (-1.5, -0.5)
FLOOR = 0.1  # a band's factor never falls under this: its candidates stay reachable
PRIOR = 1.0  # pseudo-counts of gains claimed and realized


@dataclass(frozen=True)
class _Filed:
    candidate: int
    budget: int
    band: int
    claimed: float
    incumbent: float


@dataclass
class RealizedDiscount:
    """Per band, what the picks filed in it realized; `point`: one point of the objective in
    its units (1 for accuracy in percent, 0.01 for a fraction); not `active`: every factor 1."""

    point: float = 1.0
    active: bool = True
    _pending: list[_Filed] = field(default_factory=list)
    _band: list[int] = field(default_factory=list)  # per settled pick
    _claimed: list[float] = field(default_factory=list)
    _gained: list[bool] = field(default_factory=list)

    @property
    def edges(self) -> np.ndarray:
        return np.array(EDGES_POINTS) * self.point

    def bands(self, gap: np.ndarray) -> np.ndarray:
        """The band (0: far below) of each (ensemble mean - incumbent)."""
        return np.searchsorted(self.edges, gap, side="right")

    def totals(self) -> np.ndarray:
        """Per band (rows): picks settled, gains they claimed in all, gains realized."""
        band = np.array(self._band, dtype=int)
        mine = band[None, :] == np.arange(len(EDGES_POINTS) + 1)[:, None]
        claimed, gained = np.array(self._claimed, dtype=float), np.array(self._gained, dtype=float)
        return np.stack([mine.sum(1), mine @ claimed, mine @ gained], 1)

    def factors(self) -> np.ndarray:
        """Per band, (gains + PRIOR) / (claimed + PRIOR), within [FLOOR, 1]; all 1 if not active."""
        _, claimed, gained = self.totals().T
        return np.clip((gained + PRIOR) / (claimed + PRIOR), FLOOR, 1.0) if self.active else np.ones(len(claimed))

    def summary(self) -> list[dict[str, float]]:
        """Per band: its gap range in points, picks settled, gains claimed and realized, factor."""
        edges = [-np.inf, *EDGES_POINTS, np.inf]
        rows = zip(edges, edges[1:], self.totals(), self.factors())
        return [
            {"from": a, "to": b, "picks": int(n), "claimed": float(c), "gained": int(g), "factor": float(f)}
            for a, b, (n, c, g), f in rows
        ]

    def scale(self, gain: np.ndarray, mean: np.ndarray, incumbent: float) -> np.ndarray:
        """`gain` (per candidate) times its band's factor."""
        return gain * self.factors()[self.bands(mean - incumbent)]

    def file(
        self, candidate: int, budget: int, per_tree: np.ndarray, noise: float, incumbent: float, p_ok: float
    ) -> None:
        """Note a pick for a budget before it is measured: its band and claimed chance of a gain."""
        column = per_tree[:, candidate]
        claimed = p_ok * float(ndtr((column - incumbent) / max(noise, 1e-6)).mean())
        band = int(self.bands(np.array([column.mean() - incumbent]))[0])
        self._pending.append(_Filed(candidate, budget, band, claimed, incumbent))

    def settle(self, measured: Mapping[int, Mapping[str, float]], gained: Callable[..., bool]) -> None:
        """Settle the filed picks that were measured (`measured`: candidate -> its values);
        `gained(values, budget, incumbent)` says whether a pick met its budget and beat the
        incumbent. Picks not measured (the query budget ran out) are dropped."""
        for f in self._pending:
            if f.candidate in measured:
                self._band.append(f.band)
                self._claimed.append(f.claimed)
                self._gained.append(bool(gained(measured[f.candidate], f.budget, f.incumbent)))
        self._pending.clear()
