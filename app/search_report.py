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
    measured: dict[str, float] = field(default_factory=dict)
    macs: int | None = None
    params: int | None = None
    export: str | None = None

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


def _limits_text(limits: dict[str, float]) -> str:
    return ", ".join(f"{k} <= {v:g}" for k, v in limits.items())


def console_table(rows: Sequence[BudgetRow], device: str) -> Table:
    table = Table(title=f"ofa-search on {device}: chosen sub-networks (predicted vs measured)")
    for col in ("budget", "acc % pred", "acc % meas", "latency ms pred", "latency ms meas", "MMACs", "arch"):
        table.add_column(col, justify="left" if col in ("budget", "arch") else "right")
    for r in rows:
        if not r.ok:
            table.add_row(_limits_text(r.limits), "-", "-", "-", "-", "-", "NONE MEETS IT (see report.md)")
            continue
        table.add_row(
            _limits_text(r.limits),
            _acc(r, "predicted"),
            _acc(r, "measured"),
            _num(r.predicted.get("latency_ms"), ".3f"),
            _num(r.measured.get("latency_ms"), ".3f"),
            _num(r.macs / 1e6 if r.macs is not None else None, ".2f"),
            short_arch(r.arch or ""),
        )
    return table


def markdown(rows: Sequence[BudgetRow], header: dict[str, Any]) -> str:
    lines = [f"# ofa-search on {header['device']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "device"]
    lines += [
        "",
        "| budget | acc % predicted | acc % measured | latency ms predicted | latency ms measured | MMACs | arch |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.ok:
            lat_p, lat_m = _num(r.predicted.get("latency_ms"), ".3f"), _num(r.measured.get("latency_ms"), ".3f")
            mmacs = _num(r.macs / 1e6 if r.macs is not None else None, ".2f")
            lines.append(
                f"| {_limits_text(r.limits)} | {_acc(r, 'predicted')} | {_acc(r, 'measured')} | "
                f"{lat_p} | {lat_m} | {mmacs} | `{r.arch}` |"
            )
        else:
            lines.append(f"| {_limits_text(r.limits)} | - | - | - | - | - | none meets it |")
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
) -> Path:
    """Predicted latency vs accuracy of every evaluated arch, the front, each budget's choice
    (predicted, and measured when it was measured) and the budget limits."""
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
