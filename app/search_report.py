"""What `ofa-search` leaves behind: report.json, report.md, pareto.png and the per-budget rows.

A `BudgetRow` is one budget's answer: the chosen arch with its predicted and measured figures
(or, when nothing met the budget, the message naming the closest arch). The same rows feed the
JSON, the Markdown table, the console table and the Pareto plot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ofa.arch import ArchConfig
from ofa.io import atomic_write_bytes, atomic_write_json, atomic_write_text


@dataclass
class BudgetRow:
    budget: str
    limits: dict[str, float]
    arch: str | None  # None: nothing met the budget
    message: str
    predicted: dict[str, float] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)  # acc on the validation split
    test: dict[str, float] = field(default_factory=dict)  # acc, se (binomial) and n on the test split
    macs: int | None = None
    params: int | None = None
    export: str | None = None
    note: str = ""  # e.g. that this answer's test accuracy is within noise of another budget's

    @property
    def ok(self) -> bool:
        return self.arch is not None

    def within_budget(self, slack: float = 0.10) -> dict[str, bool]:
        """Per limited metric: does the measured value meet the limit (within `slack`)?"""
        return {k: self.measured[k] <= v * (1 + slack) for k, v in self.limits.items() if k in self.measured}


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _acc(row: BudgetRow, where: str) -> str:
    value = getattr(row, where).get("acc")
    return "-" if value is None else f"{100 * value:.2f}"


def short_arch(key: str) -> str:
    """`r28 d4-2-2-3-4 #1a2b3c` for an arch key: resolution, depths and a hash of the full key
    (console tables stay narrow; report.md and report.json hold the full key)."""
    arch = ArchConfig.from_key(key)
    depths = "-".join(map(str, arch.d))
    return f"r{arch.r} d{depths} #{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def _test(row: BudgetRow) -> str:
    if "acc" not in row.test:
        return "-"
    return f"{100 * row.test['acc']:.2f} ± {100 * row.test['se']:.2f}"


def mark_ties(rows: list[BudgetRow], z: float = 2.0) -> list[BudgetRow]:
    """Note where a budget's answer differs from the previous budget's by less than their noise
    on the test split (|difference| < z x the combined standard error): do not rank those."""
    previous: BudgetRow | None = None
    for r in rows:
        if not (r.ok and "acc" in r.test):
            continue
        if previous is not None and previous.arch != r.arch:
            diff = r.test["acc"] - previous.test["acc"]
            noise = z * (r.test["se"] ** 2 + previous.test["se"] ** 2) ** 0.5
            if abs(diff) < noise:
                r.note = f"within noise of {previous.budget} ({100 * diff:+.2f} pt, noise ±{100 * noise:.2f})"
        previous = r
    return rows


def _limits_text(limits: dict[str, float]) -> str:
    return ", ".join(f"{k} <= {v:g}" for k, v in limits.items())


def console_table(rows: Sequence[BudgetRow], device: str) -> Table:
    table = Table(title=f"ofa-search on {device}: the answer per budget (measured first, predicted beside)")
    columns = ("budget", "acc % test ± SE", "acc % val", "acc % pred", "latency ms meas", "latency ms pred",
               "MMACs", "arch")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("budget", "arch") else "right")
    for r in rows:
        if not r.ok:
            table.add_row(_limits_text(r.limits), "-", "-", "-", "-", "-", "-", "NONE MEETS IT (see report.md)")
            continue
        table.add_row(
            _limits_text(r.limits),
            _test(r) + (" ~" if r.note else ""),
            _acc(r, "measured"),
            _acc(r, "predicted"),
            _num(r.measured.get("latency_ms"), ".3f"),
            _num(r.predicted.get("latency_ms"), ".3f"),
            _num(r.macs / 1e6 if r.macs is not None else None, ".2f"),
            short_arch(r.arch or ""),
        )
    if any(r.note for r in rows):
        table.caption = "~: within noise of the budget above (report.md); do not rank these two"
    return table


def markdown(rows: Sequence[BudgetRow], header: dict[str, Any]) -> str:
    lines = [f"# ofa-search on {header['device']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "device"]
    lines += [
        "",
        "| budget | acc % test ± SE | acc % validation | acc % predicted | latency ms measured "
        "| latency ms predicted | MMACs | arch |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.ok:
            lat_p, lat_m = _num(r.predicted.get("latency_ms"), ".3f"), _num(r.measured.get("latency_ms"), ".3f")
            mmacs = _num(r.macs / 1e6 if r.macs is not None else None, ".2f")
            lines.append(
                f"| {_limits_text(r.limits)} | {_test(r)} | {_acc(r, 'measured')} | {_acc(r, 'predicted')} | "
                f"{lat_m} | {lat_p} | {mmacs} | `{r.arch}` |"
            )
        else:
            lines.append(f"| {_limits_text(r.limits)} | - | - | - | - | - | - | none meets it |")
    notes = [f"- {r.budget}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "## Answers within noise of each other", ""] + notes
    unmet = [r.message for r in rows if not r.ok]
    if unmet:
        lines += ["", "## Budgets nothing meets", ""] + [f"- {m}" for m in unmet]
    return "\n".join(lines) + "\n"


def pareto_png(
    path: Path,
    evaluated: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    rows: Sequence[BudgetRow],
    title: str,
    measured: Sequence[tuple[float, float]] = (),
) -> Path:
    """Predicted latency vs accuracy of every evaluated arch, the front, the sub-networks the
    loop chose from (measured), each budget's answer (predicted, and measured when it was
    measured) and the budget limits."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if evaluated:
        xs, ys = zip(*evaluated)
        ax.scatter(xs, [100 * y for y in ys], s=4, c="0.75", label="evaluated (predicted)")
    if front:
        xs, ys = zip(*sorted(front))
        ax.step(xs, [100 * y for y in ys], where="post", c="tab:blue", lw=1.2, label="Pareto front (predicted)")
    if measured:
        xs, ys = zip(*measured)
        ax.scatter(xs, [100 * y for y in ys], s=10, c="k", marker="o", alpha=0.6, label="measured (validation)")
    for i, r in enumerate(rows):
        limit = r.limits.get("latency_ms")
        if limit is not None:
            ax.axvline(limit, ls="--", lw=0.8, c=f"C{i + 2}")
        if r.ok and "latency_ms" in r.predicted:
            ax.scatter([r.predicted["latency_ms"]], [100 * r.predicted["acc"]], marker="*", s=120, c=f"C{i + 2}",
                       edgecolors="k", zorder=3, label=f"{r.budget}: predicted")  # fmt: skip
            if "latency_ms" in r.measured and "acc" in r.measured:
                ax.scatter([r.measured["latency_ms"]], [100 * r.measured["acc"]], marker="X", s=70, c=f"C{i + 2}",
                           edgecolors="k", zorder=3, label=f"{r.budget}: measured")  # fmt: skip
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_reports(out: Path, rows: Sequence[BudgetRow], header: dict[str, Any]) -> None:
    atomic_write_json(out / "report.json", {**header, "budgets": [asdict(r) for r in rows]})
    atomic_write_text(out / "report.md", markdown(rows, header))
