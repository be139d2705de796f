"""`ofa-fewshot-bench`: a latency predictor for a device from N of its measurements plus what
the other devices of a table say (predictors.transfer), scored against the device's full column.

The table is a NAS-Bench-201 one (`arch` cell strings) or an OFA one (`ks,e,d,r` columns). The
target column sits behind search.benchmarks' `TableOracle`: each distinct row revealed costs one
query and a query past `n` is refused, so the fit sees at most `n` of its values. The source
columns stand for devices already profiled: they are replaced by out-of-fold predictions of a
model fitted on each whole column (`smooth_columns`), as a fitted predictor of such a device
would say. Writes `measured.csv` (the revealed rows, in query order) and `predictions.csv` (every
row, `predicted`), prints Spearman's rho and Kendall's tau against the full column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from scipy import stats

from app.shell import hydra_command, make_console
from ofa.archtable import archs_of, read_csv, space_of
from ofa.io import atomic_write_csv
from ofa.space import ARCH_FIELDS, SPACES, MBV3Space
from predictors.features import encode, to_arrays
from predictors.transfer import TransferModel, choose_measurements, compact_features, fit_transfer, smooth_columns
from search import nb201
from search.benchmarks.table import LATENCY, ArchTable, TableOracle
from search.genes import MBV3Genes, NB201Genes

USAGE = "ofa-fewshot-bench table=<csv> sources=[<col>,...] target=<col> n=<N> seed=<S> out=<dir>"
STRATEGIES = ("transfer", "random")
# A device's cost columns: what a source or target may be (an accuracy column is not a device).
COST_PREFIXES = ("latency", "power", "energy")


@dataclass(frozen=True)
class FewshotTable:
    """A table read for few-shot transfer: per row its key, its key columns (as written), the
    features the transfer model, the sources' smoothing and the one-hot baseline use, and the
    numeric columns."""

    path: Path
    space_name: str  # "nb201" or an MBV3 space's name
    key_columns: tuple[str, ...]  # ("arch",) or ARCH_FIELDS
    keys: list[str]
    fields: list[dict[str, str]]
    compact: np.ndarray
    rich: np.ndarray
    onehot: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class FewshotResult:
    target: str
    sources: tuple[str, ...]
    n: int
    seed: int
    strategy: str
    measured: np.ndarray  # row indices, in query order
    predicted: np.ndarray  # every row
    spent: int  # queries the oracle was paid
    spearman: float
    kendall: float
    model: TransferModel


def _numeric(rows: list[dict[str, str]], column: str, path: Path) -> np.ndarray:
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        try:
            out[i] = float(row[column])
        except (TypeError, ValueError):
            out[i] = np.nan
        if not np.isfinite(out[i]):
            raise ValueError(f"{path} line {i + 2}: {column} = {row[column]!r} is not a finite number")
    return out


def _mbv3_space(table: Any, space: str | None) -> MBV3Space:
    """The space named, else the table's fingerprint's, else the first named space that parses every row."""
    if space or table.fingerprints():
        return space_of(table, space)
    for candidate in SPACES.values():
        try:
            archs_of(table, candidate)
        except ValueError:
            continue
        return candidate
    raise ValueError(f"{table.path}: no named space parses every row; name one with space=<name>")


def read_fewshot_table(path: str | Path, columns: list[str], space: str | None = None) -> FewshotTable:
    """`columns` (device costs: latency, power, energy) of a NAS-Bench-201 table (`arch`) or an
    OFA table (`ks,e,d,r`). The transfer model's compact features: per cell the count of each
    operation as written (x86 CPUs and GPUs run every edge) and on the edges that reach the
    output (mobile runtimes prune the rest), `search.nb201.cost_features` (these counts fit the
    Pixel 3 and Raspberry Pi 4 columns better than the fully effective ones); per sub-network
    `predictors.transfer.compact_features`."""
    table = read_csv(path, "table")
    costs = [c for c in table.columns if c.lower().startswith(COST_PREFIXES)]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{table.path} has no column {missing[0]!r}; allowed: {', '.join(costs)}")
    other = [c for c in columns if c not in costs]
    if other:
        kind = "a device's cost (named latency*, power* or energy*)"
        raise ValueError(f"column {other[0]!r} is not {kind}; allowed: {', '.join(costs)}")
    if not table.rows:
        raise ValueError(f"{table.path} has a header but no rows")
    values = {c: _numeric(table.rows, c, table.path) for c in columns}
    if "arch" in table.columns:
        genes = NB201Genes()
        rows = np.stack([genes.row_of(r["arch"]) for r in table.rows])
        keys = [genes.decode(r) for r in rows]
        fields = [{"arch": r["arch"]} for r in table.rows]
        return FewshotTable(table.path, "nb201", ("arch",), keys, fields, nb201.cost_features(rows),
                            nb201.edge_features(rows), nb201.one_hot(rows), values)  # fmt: skip
    if not set(ARCH_FIELDS) <= set(table.columns):
        raise ValueError(f"{table.path} has neither an arch column nor {', '.join(ARCH_FIELDS)}")
    mbv3 = _mbv3_space(table, space)
    archs = archs_of(table, mbv3, space_option=True)
    arrays = to_arrays(archs, mbv3)
    fields = [{k: r[k] for k in ARCH_FIELDS} for r in table.rows]
    return FewshotTable(table.path, mbv3.name, ARCH_FIELDS, [a.key() for a in archs], fields,
                        compact_features(arrays, mbv3), encode(arrays, mbv3, "all"), encode(arrays, mbv3, "onehot"),
                        values)  # fmt: skip


def _check(table: FewshotTable, sources: list[str], target: str, n: int, strategy: str) -> None:
    allowed = ", ".join(table.columns)
    for name in (*sources, target):
        if name not in table.columns:
            raise ValueError(f"column {name!r} is not among the table's columns read; allowed: {allowed}")
    if target in sources:
        raise ValueError(f"target = {target!r} is also a source; the sources are the other devices' columns")
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= len(table):
        raise ValueError(f"n = {n!r} is not allowed; allowed: an integer from 2 to {len(table)} (the table's rows)")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy = {strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
    if np.any(table.columns[target] <= 0) or any(np.any(table.columns[s] <= 0) for s in sources):
        raise ValueError("latency columns must be positive; a value <= 0 is in the target or a source")


def smoothed_sources(table: FewshotTable, sources: list[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """The source columns as their devices' predictors see them (out-of-fold), shape (rows, k)."""
    if not sources:
        return np.zeros((len(table), 0))
    return smooth_columns(table.rich, np.column_stack([table.columns[s] for s in sources]), folds, seed)


def run_fewshot(
    table: FewshotTable,
    sources: list[str],
    target: str,
    n: int,
    seed: int = 0,
    strategy: str = "transfer",
    source_values: np.ndarray | None = None,
) -> FewshotResult:
    """Measure `n` rows of `target` (chosen by `strategy`) through a counting oracle, fit the
    transferred predictor (no sources: the one-device fallback), predict every row and score it.
    `source_values`: `smoothed_sources(table, sources)` when already computed."""
    _check(table, sources, target, n, strategy)
    S = smoothed_sources(table, sources) if source_values is None else np.asarray(source_values, float)
    S_or_none = S if sources else None
    if strategy == "transfer":
        chosen = choose_measurements(n, seed, S_or_none, table.compact)
    else:
        chosen = np.random.default_rng(seed).choice(len(table), n, replace=False)
    truth = table.columns[target]
    hidden = ArchTable(table.path, _genes(table), table.keys, {target: truth})
    oracle = TableOracle(hidden, target, target, n)
    y = oracle.lookup(LATENCY)([table.keys[i] for i in chosen])
    index = {k: i for i, k in enumerate(table.keys)}
    measured = np.array([index[k] for k in oracle.revealed])
    model = fit_transfer(y, None if S_or_none is None else S[chosen], table.compact[chosen])
    predicted = model.predict(S_or_none, table.compact)
    rho, tau = stats.spearmanr(predicted, truth).statistic, stats.kendalltau(predicted, truth).statistic
    return FewshotResult(target, tuple(sources), n, seed, strategy, measured, predicted, oracle.spent,
                         float(rho), float(tau), model)  # fmt: skip


def _genes(table: FewshotTable) -> Any:
    return NB201Genes() if table.space_name == "nb201" else MBV3Genes(SPACES[table.space_name])


def write_outputs(out: str | Path, table: FewshotTable, result: FewshotResult) -> dict[str, Path]:
    """`measured.csv` (query, key columns, target) and `predictions.csv` (key columns, predicted)."""
    out = Path(out)
    keys, target = list(table.key_columns), result.target
    measured = [
        {"query": q + 1, **table.fields[i], target: float(table.columns[target][i])}
        for q, i in enumerate(result.measured)
    ]  # fmt: skip
    predicted = [{**table.fields[i], "predicted": float(p)} for i, p in enumerate(result.predicted)]
    return {
        "measured": atomic_write_csv(out / "measured.csv", measured, ["query", *keys, target]),
        "predictions": atomic_write_csv(out / "predictions.csv", predicted, [*keys, "predicted"]),
    }


def result_table(table: FewshotTable, result: FewshotResult) -> Table:
    title = (
        f"{result.target} of {table.path.name} ({len(table)} rows, {table.space_name}) from "
        f"{result.spent} measurements ({result.strategy}, seed {result.seed})"
    )
    out = Table(title=title)
    for col in ("sources", "spearman", "kendall tau", "model"):
        out.add_column(col, justify="right" if col in ("spearman", "kendall tau") else "left", overflow="fold")
    out.add_row(", ".join(result.sources) or "none (one-device fit)", f"{result.spearman:.4f}",
                f"{result.kendall:.4f}", result.model.describe())  # fmt: skip
    return out


def bench(cfg: DictConfig, console: Console | None = None) -> FewshotResult:
    """The `ofa-fewshot-bench` job on a composed conf/fewshot_bench.yaml (tests call this directly)."""
    console = console or make_console()
    for key in ("table", "target", "out"):
        if cfg.get(key) in (None, ""):
            raise ValueError(f"{key} is required: {USAGE}")
    sources = [str(s) for s in (OmegaConf.to_container(cfg.sources) if cfg.get("sources") else [])]
    target, n = str(cfg.target), cfg.n
    table = read_fewshot_table(cfg.table, [*dict.fromkeys([*sources, target])], cfg.get("space"))
    _check(table, sources, target, n, str(cfg.strategy))
    with console.status(f"fitting the {len(sources)} sources' predictors on {len(table)} rows"):
        S = smoothed_sources(table, sources, int(cfg.smooth_folds))
    result = run_fewshot(table, sources, target, n, int(cfg.seed), str(cfg.strategy), S)
    paths = write_outputs(cfg.out, table, result)
    console.print(result_table(table, result))
    console.print(f"written: {paths['measured']} ({result.spent} rows), {paths['predictions']} ({len(table)} rows)")
    return result


@hydra_command("fewshot_bench")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
