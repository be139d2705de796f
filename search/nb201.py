"""How the measurement loop sees NAS-Bench-201 cells: what a cell computes, not how it is written.

An edge whose source no live path reaches, or whose target reaches no output, computes
nothing that matters; `effective_ops` sets such edges to `none`. Cells with the same
effective ops compute the same function (the table's accuracies still differ between them by
training noise) and form one group. Accuracy features describe the effective cell: its ops
one-hot, the ops along each input-to-output path (path encoding), counts of live
operations (params and FLOPs of a cell are a fixed mix of its conv counts) and a summary of
the live paths with skips contracted (`path_summary`). Cost features
count each op as written (x86 CPUs and GPUs run every edge, dead or not) and on the edges that
reach the output (a mobile runtime prunes the rest): ten numbers that a linear model fits with
a fraction of the measurements a per-edge encoding needs.
"""

from __future__ import annotations

import numpy as np

from search.genes import NB201_EDGES, NB201_OPS

NONE, SKIP, CONV1, CONV3, POOL = (NB201_OPS.index(o) for o in NB201_OPS)
_EDGE = {e: i for i, e in enumerate(NB201_EDGES)}
# The four input-to-output paths of the 4-node cell, as edges (to, from).
PATHS = (((3, 0),), ((1, 0), (3, 1)), ((2, 0), (3, 2)), ((1, 0), (2, 1), (3, 2)))


def effective_ops(rows: np.ndarray, keep_unreached: bool = False) -> np.ndarray:
    """Rows of op indices with every edge that cannot affect the output set to `none`.
    `keep_unreached`: set only the edges whose target reaches no output to `none` (an edge fed
    by a node the input does not reach still runs, on zeros): what a mobile runtime's graph
    compiler prunes as dead code."""
    rows = np.asarray(rows)
    out = np.empty_like(rows)
    for n, row in enumerate(rows):
        live = {e: row[i] != NONE for i, e in enumerate(NB201_EDGES)}
        reached = {0: True}
        for j in (1, 2, 3):
            reached[j] = any(live[(j, i)] and reached[i] for i in range(j))
        useful = {3: True}
        for j in (2, 1, 0):
            useful[j] = any(live[(k, j)] and useful[k] for k in range(j + 1, 4))
        for i, (to, frm) in enumerate(NB201_EDGES):
            out[n, i] = row[i] if live[(to, frm)] and (reached[frm] or keep_unreached) and useful[to] else NONE
    return out


def one_hot(rows: np.ndarray) -> np.ndarray:
    return np.eye(len(NB201_OPS))[rows].reshape(len(rows), -1)


def path_encoding(rows: np.ndarray) -> np.ndarray:
    """One-hot of the op sequence along each of the four paths (5 + 25 + 25 + 125 columns)."""
    k = len(NB201_OPS)
    parts = []
    for path in PATHS:
        code = np.zeros(len(rows), dtype=np.int64)
        for edge in path:
            code = code * k + rows[:, _EDGE[edge]]
        parts.append(np.eye(k ** len(path))[code])
    return np.hstack(parts)


def op_counts(rows: np.ndarray) -> np.ndarray:
    """Per cell, how many edges hold each operation."""
    rows = np.asarray(rows)
    return np.stack([(rows == k).sum(1) for k in range(len(NB201_OPS))], axis=1).astype(float)


def live_counts(effective: np.ndarray) -> np.ndarray:
    """Per cell: output reached (0/1), live skip / 1x1 / 3x3 / pool counts, the most convs on
    one live path, live paths, and 9 x 3x3 + 1x1 (proportional to the cell's FLOPs)."""
    counts = op_counts(effective)[:, [SKIP, CONV1, CONV3, POOL]]
    conv = np.isin(effective, (CONV1, CONV3))
    live = effective != NONE
    depth = np.zeros(len(effective))
    paths = np.zeros(len(effective))
    for path in PATHS:
        idx = [_EDGE[e] for e in path]
        alive = live[:, idx].all(1)
        paths += alive
        depth = np.maximum(depth, np.where(alive, conv[:, idx].sum(1), 0))
    reached = (paths > 0).astype(float)
    flops = 9 * counts[:, 2] + counts[:, 1]
    return np.column_stack([reached, counts, depth, paths, flops]).astype(float)


def path_summary(effective: np.ndarray) -> np.ndarray:
    """Per cell, its live input-to-output paths as the function sees them (skips contracted):
    whether the input itself reaches the output (a residual), how many paths hold 0 / 1 / 2 / 3
    convs, how many hold a pool, and the fewest convs on a live path (-1: none live). Cells that
    compute alike but are written differently (nodes swapped, a conv reached through a skip)
    get the same summary, so what the trees learn of one carries to the others."""
    out = np.zeros((len(effective), 7))
    shallowest = np.full(len(effective), np.inf)
    for path in PATHS:
        ops = effective[:, [_EDGE[e] for e in path]]
        alive = (ops != NONE).all(1)
        convs = np.isin(ops, (CONV1, CONV3)).sum(1)
        out[:, 0] = np.maximum(out[:, 0], alive & (ops == SKIP).all(1))
        for k in range(4):
            out[:, 1 + k] += alive & (convs == k)
        out[:, 5] += alive & (ops == POOL).any(1)
        shallowest = np.where(alive, np.minimum(shallowest, convs), shallowest)
    out[:, 6] = np.where(np.isfinite(shallowest), shallowest, -1)
    return out


def accuracy_features(rows: np.ndarray) -> np.ndarray:
    eff = effective_ops(rows)
    return np.hstack([one_hot(eff), path_encoding(eff), live_counts(eff), path_summary(eff)])


def cost_features(rows: np.ndarray) -> np.ndarray:
    """Op counts as written and on the edges that reach the output. On the ~100 cells a
    measurement loop has seen, a ridge on these misses the table's latencies by 36-70 % of what
    it misses on the per-edge encoding (`edge_features`), and the budgets' optima by far less
    (`bench/README.md#loop_ceilingpy`)."""
    return np.hstack([op_counts(rows), op_counts(effective_ops(rows, keep_unreached=True))])


def edge_features(rows: np.ndarray) -> np.ndarray:
    """Per edge, the op as written and as computed (one-hot), and the live counts."""
    eff = effective_ops(rows)
    return np.hstack([one_hot(np.asarray(rows)), one_hot(eff), live_counts(eff)])


_OP_NAME = {SKIP: "skip", CONV1: "conv1x1", CONV3: "conv3x3", POOL: "pool"}


def function_keys(rows: np.ndarray) -> list[str]:
    """One key per cell naming the function it computes, so that cells written differently
    (dead edges, nodes 1 and 2 swapped, a conv reached through a skip) share it. Each live conv
    or pool is named by its op and what it reads; the key lists what reaches the output and
    every live op, so one conv read twice differs from two convs. `conv3x3(x)` has 460 cells.
    The loop's classes (`LoopSpace.classes`, whose members it draws as a budget's answer's
    mates); `bench/loop_ceiling.py` tells the loop each class's mean accuracy."""
    out = []
    for eff in effective_ops(rows):
        value: dict[int, list[str]] = {0: ["x"]}  # per node: the names of what is summed there
        named: dict[int, str] = {}  # per live op edge: its name
        for j in (1, 2, 3):
            value[j] = []
            for i, (to, frm) in enumerate(NB201_EDGES):
                if to != j or eff[i] == NONE:  # effective ops: a live edge's source is reached
                    continue
                if eff[i] == SKIP:
                    value[j].extend(value[frm])
                else:
                    named[i] = f"{_OP_NAME[int(eff[i])]}({' + '.join(sorted(value[frm]))})"
                    value[j].append(named[i])
        out.append(" + ".join(sorted(value[3])) + " | " + ", ".join(sorted(named.values())))
    return out


def groups(rows: np.ndarray) -> list[bytes]:
    """One id per cell; cells with the same effective ops share it."""
    return [r.tobytes() for r in effective_ops(rows).astype(np.int8)]
