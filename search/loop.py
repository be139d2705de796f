"""Measurement in the loop of the search: rounds of predict -> pick -> measure -> refit.

A search on predictors answers with what the predictors believe; this loop answers with what
was measured. It starts from a few random candidates (plus whatever was measured before: a
resumed loop never measures a config twice), then each round

1. fits an ensemble of extra-trees on the measured accuracy (each tree is one plausible
   predictor) and, per cost metric of the budgets, the best (5-fold CV) of two ridges and an
   extra-trees model on the measured cost, with its CV residuals (what it misses by;
   `search.cost_belief`);
2. per budget, picks the unmeasured candidates (at most one per group of configs expected to
   score alike) with the largest constrained expected improvement: the chance that the
   candidate meets the budget (the share of the cost models' misses that would bring it
   within) times how much it is expected to beat the budget's best measured objective (each
   tree's prediction plus measurement noise, averaged over the trees, so a candidate the trees
   disagree on is worth a try); where groups measure differently, the first pick may instead
   be an unmeasured member of the group of the budget's answer (`_group_mate`; with three
   picks per budget and round or more, of its class, where the space names classes); each
   expected gain is scaled by what the run's earlier picks of its kind realized
   (`search.realized`: far-below cells gain far less often than the trees claim);
3. measures the picks (one call of `measure`, which may refuse past its own query budget).

The answer per budget is the best *measured* config that meets it (`search.result.choose` on
the measured values), so it is never dominated by a config the loop measured. The noise
between configs of one group (e.g. NAS-Bench-201 cells that compute the same function) is
estimated from the measured groups; it is what lets the loop try a near-twin of its best.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.cost_belief import CostBelief, fit_cost, known_cost
from search.expected_gain import expected_gain, group_noise
from search.objectives import Budget
from search.realized import RealizedDiscount

Measure = Callable[[list[Any]], list[dict[str, float]]]


@dataclass(frozen=True)
class LoopSettings:
    """`queries`: configs measured in all (prior measurements included); `initial`: random
    configs measured before the first fit (default max(10, queries // 10)); `per_budget`: picks
    per budget and round (default 2 up to 100 queries, else 3)."""

    queries: int
    initial: int | None = None
    per_budget: int | None = None
    seed: int = 0
    trees: int = 128  # the ensemble; expected improvement rests on its tails (64: Q = 300 regret 0.077 against 0.038)
    noise: float | None = None  # the objective's measurement noise; None: estimated within groups
    patience: int | None = None  # stop after this many rounds in which no budget's best improved
    # Scale expected gains by what the run's picks realized (`search.realized`, with
    # `REALIZED_MIN_PICKS` picks per budget or more); `point`: one point of the objective in its
    # units (accuracy in percent: 1; as a fraction: 0.01).
    realized: bool = True
    point: float = 1.0

    def __post_init__(self) -> None:
        for name in ("queries", "initial", "per_budget", "trees", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} = {value!r} is not allowed; allowed: an integer >= 1")
        if not isinstance(self.realized, bool):
            raise ValueError(f"realized = {self.realized!r} is not allowed; allowed: true, false")
        if not (isinstance(self.point, (int, float)) and not isinstance(self.point, bool) and self.point > 0):
            raise ValueError(f"point = {self.point!r} is not allowed; allowed: a number > 0")

    @property
    def n_initial(self) -> int:
        return min(self.queries, self.initial or max(10, self.queries // 10))

    @property
    def n_per_budget(self) -> int:
        return self.per_budget or (2 if self.queries <= 100 else 3)

    @property
    def scales_gains(self) -> bool:
        """Whether expected gains are scaled by what the run's picks realized (`REALIZED_MIN_PICKS`)."""
        return self.realized and self.n_per_budget >= REALIZED_MIN_PICKS


@dataclass(frozen=True)
class LoopSpace:
    """The candidates the loop picks from and how its models see them."""

    candidates: Sequence[Any]
    keys: Sequence[str]
    accuracy_features: np.ndarray  # one row per candidate
    cost_features: np.ndarray
    groups: Sequence[Hashable] | None = None  # candidates expected to score alike share a group
    # A diagnostic: values of some metrics (one per candidate: the truth, or a class's mean) that
    # the loop believes instead of fitting a model. It still measures (and pays for) every
    # answer. `bench/loop_ceiling.py` uses it to show how far a perfect model would take the loop.
    known: Mapping[str, np.ndarray] | None = None
    # Candidates that compute alike though written differently: a coarser grouping than `groups`
    # (NAS-Bench-201: `nb201.function_keys`). With `CLASS_MATES_MIN_PICKS` picks per budget, a
    # budget's answer's class-mates are drawn as its group-mates are otherwise (`_group_mate`).
    classes: Sequence[Hashable] | None = None

    def __post_init__(self) -> None:
        n = len(self.candidates)
        if not (len(self.keys) == len(self.accuracy_features) == len(self.cost_features) == n):
            raise ValueError("candidates, keys and feature rows must have one entry per candidate")
        for name in ("groups", "classes"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per candidate")
        if any(len(v) != n for v in (self.known or {}).values()):
            raise ValueError("known values must have one entry per candidate")

    @functools.cached_property
    def group_ids(self) -> np.ndarray:
        """An integer group per candidate (each its own without `groups`), for vectorised masks."""
        return _ids(self.groups, len(self.candidates))

    @functools.cached_property
    def class_ids(self) -> np.ndarray:
        """An integer class per candidate (its group's where the space names no classes)."""
        return self.group_ids if self.classes is None else _ids(self.classes, len(self.candidates))


def _ids(labels: Sequence[Hashable] | None, n: int) -> np.ndarray:
    """Labels as integers 0, 1, ... in order of appearance; each its own without labels."""
    if labels is None:
        return np.arange(n)
    ids: dict[Hashable, int] = {}
    return np.array([ids.setdefault(g, len(ids)) for g in labels])


@dataclass(frozen=True)
class Measurement:
    key: str
    config: Any
    values: dict[str, float]
    round: int  # 0: initial or prior


@dataclass(frozen=True)
class RoundReport:
    """What one round measured and the best measured answer per budget so far."""

    round: int
    measured: int  # in all, prior measurements included
    picked: int
    best: dict[str, tuple[str, float] | None]  # budget name -> (key, objective) or None


@dataclass
class LoopResult:
    measurements: list[Measurement] = field(default_factory=list)
    rounds: int = 0
    stopped: str = "measurement budget spent"
    realized: list[dict[str, float]] = field(default_factory=list)  # `RealizedDiscount.summary`


def meets(values: dict[str, float], budget: Budget) -> bool:
    """The loop's budgets limit costs from above (latency, power, energy)."""
    return all(values[c.name] <= c.limit for c in budget.constraints)


def best_measured(measurements: Sequence[Measurement], budget: Budget, objective: str) -> Measurement | None:
    ok = [m for m in measurements if meets(m.values, budget)]
    return max(ok, key=lambda m: m.values[objective]) if ok else None


def _incumbents(best: Mapping[str, tuple[str, float] | None], budgets: Sequence[Budget], floor: float) -> list[float]:
    """Per budget, its best measured objective (`best`, the round's report); where nothing
    measured meets it yet, `floor`, the lowest measured (any candidate that meets it is a gain)."""
    return [entry[1] if (entry := best[b.name]) else floor for b in budgets]


def run_loop(
    space: LoopSpace,
    measure: Measure,
    budgets: Sequence[Budget],
    settings: LoopSettings,
    objective: str = "accuracy",
    prior: Sequence[Measurement] = (),
    on_round: Callable[[RoundReport], None] | None = None,
) -> LoopResult:
    """Measure up to `settings.queries` candidates (prior ones count) and return every
    measurement in order. `measure(configs)` returns one dict of figures per config, with the
    objective and every metric the budgets limit."""
    if not budgets:
        raise ValueError("the measurement loop needs at least one budget")
    index = {k: i for i, k in enumerate(space.keys)}
    result = LoopResult(list(prior))
    prior_keys = {m.key for m in prior}
    done = np.array([k in prior_keys for k in space.keys], dtype=bool)

    def take(picks: list[int], round_: int) -> dict[int, dict[str, float]]:
        configs = [space.candidates[i] for i in picks]
        new = [Measurement(space.keys[i], c, dict(v), round_) for i, c, v in zip(picks, configs, measure(configs))]
        done[picks[: len(new)]] = True
        result.measurements.extend(new)
        return {index[m.key]: m.values for m in new}  # per candidate, what it measured

    def report(round_: int, picked: int) -> dict[str, tuple[str, float] | None]:
        best = {}
        for b in budgets:
            m = best_measured(result.measurements, b, objective)
            best[b.name] = (m.key, m.values[objective]) if m else None
        if on_round is not None:
            on_round(RoundReport(round_, len(result.measurements), picked, best))
        return best

    n_random = max(0, min(settings.n_initial, settings.queries) - len(result.measurements))
    free = np.flatnonzero(~done)
    first = [int(i) for i in np.random.default_rng(settings.seed).choice(free, min(n_random, len(free)), replace=False)]
    if first:
        take(first, 0)
    best = report(0, len(first))  # round 0: the random start and the prior measurements
    realized = RealizedDiscount(settings.point, active=settings.scales_gains)
    round_ = stale = 0
    while len(result.measurements) < settings.queries and not done.all():
        round_ += 1
        models = _fit_models(space, result.measurements, index, budgets, settings, objective, round_)
        incumbents = _incumbents(best, budgets, min(m.values[objective] for m in result.measurements))
        held_by = [index.get(entry[0]) if (entry := best[b.name]) else None for b in budgets]
        picks = _pick(space, models, done, budgets, incumbents, settings.n_per_budget, held_by, realized)
        if not picks:
            break
        picks = picks[: settings.queries - len(result.measurements)]
        realized.settle(take(picks, round_), lambda v, b, inc: meets(v, budgets[b]) and v[objective] > inc)
        previous, best = best, report(round_, len(picks))
        stale = stale + 1 if best == previous else 0
        if settings.patience is not None and stale >= settings.patience:
            result.stopped = f"no budget's best improved in {stale} rounds"
            break
    result.rounds, result.realized = round_, realized.summary()
    return result


@dataclass(frozen=True)
class _Models:
    """One round's beliefs: each tree's predicted objective per candidate, the measurement
    noise, and per cost metric its belief."""

    per_tree: np.ndarray
    noise: float
    costs: dict[str, CostBelief]


def _fit_models(
    space: LoopSpace,
    measured: Sequence[Measurement],
    index: dict[str, int],
    budgets: Sequence[Budget],
    settings: LoopSettings,
    objective: str,
    round_: int,
) -> _Models:
    from sklearn.ensemble import ExtraTreesRegressor

    known = [m for m in measured if m.key in index]
    rows = np.array([index[m.key] for m in known])
    y = np.array([m.values[objective] for m in known])
    truth = space.known or {}
    if objective in truth:  # a diagnostic: one "tree", the told values, a token noise unless set
        per_tree = np.asarray(truth[objective], dtype=float)[None, :]
        noise = settings.noise if settings.noise is not None else 1e-3 * float(np.ptp(per_tree)) + 1e-9
    else:
        trees = ExtraTreesRegressor(
            n_estimators=settings.trees, max_features=0.5, bootstrap=True, random_state=settings.seed * 1000 + round_
        ).fit(space.accuracy_features[rows], y)
        # Each tree on every candidate, unchecked: validating 15,625 rows per tree took most of a round.
        x = np.ascontiguousarray(space.accuracy_features, dtype=np.float32)
        per_tree = np.stack([t.predict(x, check_input=False) for t in trees.estimators_])
        noise = settings.noise if settings.noise is not None else group_noise(space.groups, rows, y)
    costs = {
        name: known_cost(truth[name])
        if name in truth
        else fit_cost(space.cost_features, rows, np.array([m.values[name] for m in known]), settings.seed)
        for name in sorted({c.name for b in budgets for c in b.constraints})
    }
    return _Models(per_tree, noise, costs)


# Candidates less likely than this to meet a budget are not picked for it (unless none is).
MIN_P_OK = 0.02
# A group-mate of a budget's answer (see `_group_mate`) must be at least this likely to meet the
# budget and worth at least this share of the best candidate's constrained expected improvement.
MATE_MIN_P = 0.5
MATE_SHARE = 0.33  # the share tested (bench/README.md, stop 34)
# With this many picks per budget and round or more, mates are drawn from the answer's class
# (`LoopSpace.classes`), so a mate takes at most a third of a budget's picks. With two (the
# default up to 100 queries) class-mates crowd out the search between classes: NAS-Bench-201
# Q = 100 0.267 against 0.203, and 0.24 even from half-way or once an answer stood 3 rounds;
# Q = 300 (three picks) 0.034 against 0.044 over 40 seeds (bench/README.md, stop 35).
CLASS_MATES_MIN_PICKS = 3
# With this many picks per budget and round or more, expected gains are scaled by what the run's
# picks realized (`search.realized`). With two (up to 100 queries) the bands rest on few picks and
# the discount cut the exploration Q = 100 needs: seen columns 0.275 against 0.152 (seeds 0-3).
REALIZED_MIN_PICKS = 3


def _pick(
    space: LoopSpace,
    models: _Models,
    done: np.ndarray,
    budgets: Sequence[Budget],
    incumbents: Sequence[float],
    per_budget: int,
    held_by: Sequence[int | None] = (),
    realized: RealizedDiscount | None = None,
) -> list[int]:
    """Per budget, the unmeasured candidates (one per group) with the largest constrained
    expected improvement over `incumbents` (per budget, the best measured objective that meets
    it): P(meets the budget) x the expected gain. Weighing the chance against the gain is what
    lets a near-budget cell believed well above the answer (a phone's lucky fast cell, P ~0.1)
    beat both a sure cell that adds little and a long shot (P ~0.03) believed a little higher
    (`bench/README.md#loop_ceilingpy`). `held_by`: per budget, the candidate that holds its best
    measured objective (None where none does); the first pick may be one of its group, or
    with `CLASS_MATES_MIN_PICKS` picks or more, of its class (`_group_mate`). `realized`: where
    given, scales each expected gain by what earlier picks of its band realized, and files
    this round's picks with it (`search.realized`)."""
    picks: list[int] = []
    mean = models.per_tree.mean(0)
    for b, (budget, incumbent) in enumerate(zip(budgets, incumbents)):
        p_ok = np.ones(len(done))
        for c in budget.constraints:
            p_ok *= models.costs[c.name].p_meets(c.limit)
        # Valued only where it may be picked (unmeasured, likely enough: 39 / 58 / 79 % of the cells
        # for NAS-Bench-201's p10 / p25 / p50 budgets over a Q = 300 run); among equal values the
        # better believed first.
        live = ~done & (p_ok >= MIN_P_OK)
        value = np.full(len(done), -np.inf)
        gain = expected_gain(models.per_tree[:, live], models.noise, incumbent)
        if realized is not None:
            gain = realized.scale(gain, mean[live], incumbent)
        value[live] = p_ok[live] * gain + 1e-9 * mean[live]
        first = len(picks)
        held = held_by[b] if held_by else None
        mate_ids = space.class_ids if per_budget >= CLASS_MATES_MIN_PICKS else space.group_ids
        mate = _group_mate(space, done, picks, p_ok, value, held, models.noise, mate_ids)
        if mate is not None:
            picks.append(mate)
        taken: list[int] = []  # groups picked for this budget
        for _ in range(per_budget - (mate is not None)):
            free = ~done & ~np.isin(space.group_ids, taken)
            free[picks] = False
            score = np.where(free & (p_ok >= MIN_P_OK), value, -np.inf)
            if not np.isfinite(score).any():  # nothing free likely enough: the likeliest first
                score = np.where(free, p_ok, -np.inf)
            best = int(np.argmax(score))
            if not np.isfinite(score[best]):
                break
            picks.append(best)
            taken.append(int(space.group_ids[best]))
        for i in picks[first:] if realized is not None else ():
            realized.file(i, b, models.per_tree, models.noise, incumbent, float(p_ok[i]))
    return picks


def _group_mate(
    space: LoopSpace,
    done: np.ndarray,
    picked: list[int],
    p_ok: np.ndarray,
    value: np.ndarray,
    held: int | None,
    noise: float,
    mate_ids: np.ndarray,
) -> int | None:
    """The unmeasured member of the group of `held` (a budget's answer) worth most (`value`),
    or None; `mate_ids`: the space's group ids, or its class ids (a coarser grouping). Where
    the configs of a group measure differently (NAS-Bench-201's cells that compute alike but
    trained apart; `noise` > 0), a budget's best measured answer is the luckiest member
    measured so far. Drawing another is worth little by expected improvement, yet more than
    the long shots the loop would pick instead, whose chance of meeting the budget it
    overstates (of its picks given P < 0.1, none met; `bench/README.md#loop_ceilingpy`). So a
    mate likely to meet the budget (`MATE_MIN_P`) and worth `MATE_SHARE` of the best candidate
    is drawn first. Without groups (the product's sub-networks) this never picks."""
    if held is None or space.groups is None or noise <= 1e-6:
        return None
    mates = ~done & (mate_ids == mate_ids[held]) & (p_ok >= MATE_MIN_P)
    mates[picked] = False
    if not mates.any():
        return None
    mate = int(np.argmax(np.where(mates, value, -np.inf)))
    others = ~done & (p_ok >= MIN_P_OK)
    others[picked] = False
    return mate if value[mate] >= MATE_SHARE * value[others].max() else None
