"""Benchmark mode on tables: search NAS-Bench-201 with objectives looked up in a CSV.

The table (e.g. `../shared/data/nb201_accuracy_latency.csv`) lists every cell of the space
with measured columns, so the exact Pareto front and the exact best cell under any
latency budget are known by enumeration: a search is scored by the share of the exact
front's hypervolume it reaches and by its regret per budget (exact best accuracy under the
budget minus the best accuracy found under it).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ofa.errors import check_int
from ofa.io import atomic_write_csv, atomic_write_json
from search.engine import run
from search.genes import NB201Genes
from search.loop import LoopSettings, LoopSpace, RoundReport, run_loop
from search.objectives import Budget, Metric
from search.pareto import hypervolume_2d, non_dominated
from search.problem import SearchSettings
from search.result import Evaluation, SearchResult

ACCURACY, LATENCY = "accuracy", "latency"


@dataclass(frozen=True)
class ArchTable:
    """Every cell of a space with its measured columns (`values[column][i]` for `archs[i]`)."""

    path: Path
    space: NB201Genes
    archs: list[str]
    values: dict[str, np.ndarray]

    def lookup(self, column: str) -> Callable[[Sequence[str]], np.ndarray]:
        index = {a: i for i, a in enumerate(self.archs)}
        col = self.values[column]

        def fn(cells: Sequence[str]) -> np.ndarray:
            try:
                return col[[index[c] for c in cells]]
            except KeyError as exc:
                raise ValueError(f"cell {exc.args[0]!r} is not in {self.path}") from None

        return fn


def load_table(path: str | Path, columns: Sequence[str], space: NB201Genes | None = None) -> ArchTable:
    """Read `arch` and the numeric `columns`; every cell must parse and appear once."""
    path = Path(path)
    space = space or NB201Genes()
    if not path.is_file():
        raise FileNotFoundError(f"table {path} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("arch", *columns) if c not in header]
        if missing:
            raise ValueError(f"{path} has no column {', '.join(map(repr, missing))}; columns: {', '.join(header)}")
        rows = list(reader)
    archs, seen = [], set()
    values = {c: np.empty(len(rows)) for c in columns}
    for i, row in enumerate(rows):
        cell = space.parse(row["arch"])
        if cell in seen:
            raise ValueError(f"{path} line {i + 2}: cell {cell!r} appears twice")
        seen.add(cell)
        archs.append(cell)
        for c in columns:
            try:
                values[c][i] = float(row[c])
            except ValueError:
                raise ValueError(f"{path} line {i + 2}: {c} = {row[c]!r} is not a number") from None
    if len(archs) != space.n_configs():
        raise ValueError(f"{path} has {len(archs)} cells; the space has {space.n_configs()}: the table must list all")
    return ArchTable(path, space, archs, values)


def percentile_budgets(latency: np.ndarray, percentiles: Sequence[float]) -> list[Budget]:
    """Latency budgets at percentiles of the table's latency column."""
    out = []
    for q in percentiles:
        if not 0 < float(q) < 100:
            raise ValueError(f"budget percentile {q!r} is not allowed; it must lie strictly between 0 and 100")
        out.append(Budget.of(f"p{float(q):g}", **{LATENCY: float(np.percentile(latency, q))}))
    return out


@dataclass(frozen=True)
class BudgetScore:
    name: str
    limit: float
    exact_arch: str
    exact_accuracy: float
    found_arch: str | None
    found_accuracy: float | None
    regret: float  # exact best minus found (the exact best minus the worst accuracy if nothing found)
    exact_found: bool


@dataclass(frozen=True)
class TableScore:
    hypervolume: float
    exact_hypervolume: float
    hypervolume_ratio: float
    reference: tuple[float, float]
    budgets: list[BudgetScore]

    @property
    def mean_regret(self) -> float:
        return float(np.mean([b.regret for b in self.budgets])) if self.budgets else float("nan")

    @property
    def hit_share(self) -> float:
        return float(np.mean([b.exact_found for b in self.budgets])) if self.budgets else float("nan")


def score(table: ArchTable, accuracy: str, latency: str, result: SearchResult, budgets: Sequence[Budget]) -> TableScore:
    """Hypervolume ratio against the exact front and regret per budget (by enumeration)."""
    acc, lat = table.values[accuracy], table.values[latency]
    reference = (float(acc.min()), float(-lat.max()))
    all_pts = np.stack([acc, -lat], axis=1)
    exact_hv = hypervolume_2d(all_pts[non_dominated(all_pts)], np.array(reference))
    found = np.array([[e.values[ACCURACY], -e.values[LATENCY]] for e in result.evaluations]).reshape(-1, 2)
    hv = hypervolume_2d(found, np.array(reference))
    scores = []
    for b in budgets:
        limit = b.limits()[LATENCY]
        feasible = np.flatnonzero(lat <= limit)
        best = feasible[np.lexsort((lat[feasible], -acc[feasible]))[0]]
        under = [e for e in result.evaluations if e.values[LATENCY] <= limit]
        top = min(under, key=lambda e: (-e.values[ACCURACY], e.values[LATENCY])) if under else None
        found_acc = top.values[ACCURACY] if top else None
        regret = float(acc[best] - (found_acc if top else acc.min()))
        scores.append(
            BudgetScore(
                b.name, limit, table.archs[best], float(acc[best]), top.key if top else None, found_acc,
                regret, bool(top is not None and found_acc >= acc[best]),
            )
        )  # fmt: skip
    return TableScore(hv, exact_hv, hv / exact_hv if exact_hv > 0 else float("nan"), reference, scores)


def table_search(
    table: ArchTable,
    accuracy: str,
    latency: str,
    settings: SearchSettings,
    budgets: Sequence[Budget] = (),
    progress: Callable[[int, int], None] | None = None,
    oracle: TableOracle | None = None,
) -> SearchResult:
    """Run the search on the table's space with `accuracy` (up) and `latency` (down) looked up
    (through `oracle` when given: each distinct cell evaluated pays one query).

    The baselines get no seeds and no budget focus: `nsga2` is Optuna's NSGA-II as it comes,
    `random` uniform sampling; every sampler gets `n_trials` distinct evaluations. Without a
    `study_name` in `settings`, the study is named after the columns, sampler and seed."""
    look = oracle.lookup if oracle is not None else lambda name: table.lookup(accuracy if name == ACCURACY else latency)
    objectives = [
        Metric(ACCURACY, look(ACCURACY), "maximize", "%"),
        Metric(LATENCY, look(LATENCY), "minimize", "ms"),
    ]
    if settings.study_name is None:
        name = f"bench-{accuracy}-{latency}-{settings.sampler}-s{settings.seed}"
        settings = replace(settings, study_name=name)
    budgets = budgets if settings.sampler == "refined" else ()
    return run(table.space, objectives, settings, budgets=budgets, progress=progress)


class QueryBudgetSpent(RuntimeError):
    """A query past the oracle's budget."""


class TableOracle:
    """The table behind a pay-per-query wall: a cell's accuracy and latency are revealed
    together, each distinct cell costs one query (asking again is free), and a query past
    `queries` is refused. `revealed` lists the cells in the order they were paid for."""

    def __init__(self, table: ArchTable, accuracy: str, latency: str, queries: int) -> None:
        check_int("queries", queries, 1)
        self.table, self.queries = table, queries
        self.columns = {ACCURACY: accuracy, LATENCY: latency}
        self._index = {a: i for i, a in enumerate(table.archs)}
        self.revealed: list[str] = []
        self._seen: set[str] = set()

    @property
    def spent(self) -> int:
        return len(self.revealed)

    def _pay(self, cells: Sequence[str]) -> list[int]:
        out = []
        for cell in cells:
            if cell not in self._index:
                raise ValueError(f"cell {cell!r} is not in {self.table.path}")
            if cell not in self._seen:
                if self.spent >= self.queries:
                    n, q = self.spent + 1, self.queries
                    raise QueryBudgetSpent(f"query {n} refused: the budget of {q} queries is spent")
                self._seen.add(cell)
                self.revealed.append(cell)
            out.append(self._index[cell])
        return out

    def __call__(self, cells: list[str]) -> list[dict[str, float]]:
        """Both values of each cell (the measurement loop's `measure`)."""
        idx = self._pay(cells)
        return [{name: float(self.table.values[col][i]) for name, col in self.columns.items()} for i in idx]

    def lookup(self, name: str) -> Callable[[Sequence[str]], np.ndarray]:
        """A metric function for the direct samplers: each new cell pays one query."""
        column = self.table.values[self.columns[name]]
        return lambda cells: column[self._pay(cells)]

    def rows(self) -> list[dict[str, Any]]:
        """`queries.csv`: one row per revealed cell, in the order paid for."""
        return [{"query": n + 1, "arch": cell, **self([cell])[0]} for n, cell in enumerate(self.revealed)]


@dataclass(frozen=True)
class TableBenchmark:
    """One benchmark run: search the table at `table` (columns `accuracy`, `latency`) with
    `settings`, scored on latency budgets at `budget_percentiles` of the latency column.
    With `queries`, the table sits behind a `TableOracle` of that many queries: `loop`
    settings run the measurement loop (search.loop), else the direct sampler of `settings`
    spends them as its evaluations."""

    table: str | Path
    accuracy: str
    latency: str
    settings: SearchSettings
    budget_percentiles: tuple[float, ...] = (10, 25, 50)
    queries: int | None = None
    loop: LoopSettings | None = None


def loop_search(
    table: ArchTable,
    oracle: TableOracle,
    budgets: Sequence[Budget],
    settings: LoopSettings,
    on_round: Callable[[RoundReport], None] | None = None,
    reveal: Sequence[str] = (),
) -> SearchResult:
    """The measurement loop on the table's cells; a `SearchResult` of the measured cells.
    `reveal` (a diagnostic: `accuracy`, `latency`) hands the loop's models the table's true
    values of those metrics; every answer is still paid for through `oracle`."""
    from search import nb201

    bad = [n for n in reveal if n not in oracle.columns]
    if bad:
        raise ValueError(f"reveal = {bad[0]!r} is not allowed; allowed: {', '.join(oracle.columns)}")
    rows = np.stack([table.space.row_of(c) for c in table.archs])
    known = {name: table.values[oracle.columns[name]] for name in reveal}
    space = LoopSpace(
        table.archs,
        table.archs,
        nb201.accuracy_features(rows),
        nb201.cost_features(rows),
        nb201.groups(rows),
        known,
        classes=nb201.function_keys(rows),
    )
    done = run_loop(space, oracle, budgets, settings, objective=ACCURACY, on_round=on_round)
    # The result's metrics only name and orient the measured values; nothing is looked up again.
    objectives = (
        Metric(ACCURACY, lambda c: np.zeros(len(c)), "maximize", "%"),
        Metric(LATENCY, lambda c: np.zeros(len(c)), "minimize", "ms"),
    )
    evaluations = [Evaluation(m.config, m.key, m.values, True, n) for n, m in enumerate(done.measurements)]
    pts = np.array([[e.values[ACCURACY], -e.values[LATENCY]] for e in evaluations]).reshape(-1, 2)
    front = [e for e, keep in zip(evaluations, non_dominated(pts)) if keep] if evaluations else []
    return SearchResult(
        table.space, objectives, (), evaluations, front, len(evaluations), "loop", "loop",
        f"{oracle.spent} queries in {done.rounds} rounds", metrics={m.name: m for m in objectives},
    )  # fmt: skip


def run_table_benchmark(
    bench: TableBenchmark,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> dict[str, Any]:
    """Search the table, score it, and (with `out`) write `front.csv`, `evaluated.csv`,
    `summary.json` and `front.png`. Returns the summary."""
    table = load_table(bench.table, [bench.accuracy, bench.latency])
    budgets = percentile_budgets(table.values[bench.latency], bench.budget_percentiles)
    start = time.perf_counter()
    oracle = TableOracle(table, bench.accuracy, bench.latency, bench.queries) if bench.queries else None
    if oracle is not None and bench.loop is not None:
        result = loop_search(table, oracle, budgets, bench.loop, on_round)
    else:
        settings = bench.settings if oracle is None else replace(bench.settings, n_trials=bench.queries)
        result = table_search(table, bench.accuracy, bench.latency, settings, budgets, progress, oracle)
    wall = time.perf_counter() - start
    sc = score(table, bench.accuracy, bench.latency, result, budgets)
    summary = {
        "table": str(table.path),
        "accuracy": bench.accuracy,
        "latency": bench.latency,
        "sampler": "loop" if oracle is not None and bench.loop is not None else bench.settings.sampler,
        "queries": bench.queries,
        "queries_spent": oracle.spent if oracle is not None else None,
        "seed": bench.settings.seed,
        "n_trials": bench.queries or bench.settings.n_trials,
        "population_size": bench.settings.population_size,
        "n_evaluations": result.n_evaluations,
        "n_optuna_trials": result.n_trials,
        "stopped": result.stopped,
        "space_fingerprint": table.space.fingerprint(),
        "hypervolume_ratio": sc.hypervolume_ratio,
        "hypervolume": sc.hypervolume,
        "exact_hypervolume": sc.exact_hypervolume,
        "hypervolume_reference": {"accuracy": sc.reference[0], "latency": -sc.reference[1]},
        "front_size": len(result.front),
        "mean_regret": sc.mean_regret,
        "exact_found_share": sc.hit_share,
        "budgets": [asdict(b) | {"percentile": float(q)} for b, q in zip(sc.budgets, bench.budget_percentiles)],
        "wall_s": wall,
        "evaluations_per_s": result.n_evaluations / wall if wall > 0 else None,
    }
    if out is not None:
        write_outputs(Path(out), table, bench.accuracy, bench.latency, result, summary)
        if oracle is not None:
            atomic_write_csv(Path(out) / "queries.csv", oracle.rows(), ["query", "arch", ACCURACY, LATENCY])
    return summary


def write_outputs(
    out: Path, table: ArchTable, accuracy: str, latency: str, result: SearchResult, summary: dict[str, Any]
) -> None:
    fields = ["arch", ACCURACY, LATENCY]
    atomic_write_csv(out / "front.csv", [{k: r[k] for k in fields} for r in result.rows(result.front)], fields)
    atomic_write_csv(out / "evaluated.csv", result.rows(), [*fields, "feasible", "trial"])
    atomic_write_json(out / "summary.json", summary)
    plot_front(out / "front.png", table, accuracy, latency, result, summary)


def plot_front(
    path: Path, table: ArchTable, accuracy: str, latency: str, result: SearchResult, summary: dict[str, Any]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ofa.io import atomic_write_bytes

    acc, lat = table.values[accuracy], table.values[latency]
    pts = np.stack([acc, -lat], axis=1)
    exact = np.flatnonzero(non_dominated(pts))
    exact = exact[np.argsort(lat[exact])]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(lat, acc, s=2, c="#dddddd", label=f"all {len(acc)} cells")
    ev = np.array([[e.values[LATENCY], e.values[ACCURACY]] for e in result.evaluations]).reshape(-1, 2)
    ax.scatter(ev[:, 0], ev[:, 1], s=4, c="#7fa7d9", label=f"evaluated ({len(ev)})")
    ax.step(lat[exact], acc[exact], where="post", c="k", lw=1.2, label="exact front")
    fr = np.array([[e.values[LATENCY], e.values[ACCURACY]] for e in result.front]).reshape(-1, 2)
    fr = fr[np.argsort(fr[:, 0])]
    ax.step(fr[:, 0], fr[:, 1], where="post", c="#d62728", lw=1.2, label="found front")
    for b in summary["budgets"]:
        ax.axvline(b["limit"], c="#999999", ls=":", lw=1)
    lo = np.percentile(acc, 5)
    ax.set_ylim(lo, acc.max() + 0.3)
    ax.set_xlabel(f"{latency} (ms)")
    ax.set_ylabel(accuracy)
    ax.set_title(
        f"{summary['sampler']}, {summary['n_evaluations']} evaluations: HV ratio {summary['hypervolume_ratio']:.4f}, "
        f"mean regret {summary['mean_regret']:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
