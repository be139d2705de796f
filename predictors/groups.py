"""Measuring in groups: each group of items is timed in interleaved rounds together with the
reference sub-network, measured again while the machine runs slow, and appended to the table
at once (atomically), so an interrupted run loses at most the group in flight."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from ofa.archtable import append_rows
from predictors.measure.backend import Backend
from predictors.measure.profile import DeviceProfile
from predictors.measure.runner import Runner
from predictors.measure.session import Measurement, measure_runners
from predictors.measurements import anchor_ms, normalised_row

Progress = Callable[[int, int], None]  # on_progress(done, total)


@dataclass(frozen=True)
class Item:
    key: str  # the backend's cache key and the resume key
    build: Callable[[], nn.Module]  # extracted when its group comes (hundreds would not fit in memory)
    input_shape: tuple[int, ...]
    fields: dict[str, Any]  # arch or shape columns, macs, params


def measure_group(
    profile: DeviceProfile,
    backend: Backend,
    sampler: Any,
    runners: Mapping[str, Runner],
    reference: str,
    fastest_ref: float | None,
) -> tuple[dict[str, Measurement], int]:
    """Measure one group; while its reference ran more than `drift_warn` slower than the fastest
    reference of the file so far (a slow spell of the machine spanning the whole group), measure
    it again, up to `noise.group_retries` times, and keep the session whose reference ran fastest.
    With no reference yet to compare with, the first group is measured twice when retries are on."""
    plan, noise = profile.timing_plan(), profile.noise

    def session() -> tuple[dict[str, Measurement], float]:
        measured = measure_runners(backend, runners, plan, sampler, no_power=(reference,))
        return measured, measured[reference].latency_ms

    best, best_ref = session()
    retries = 0
    while retries < noise.group_retries:
        if fastest_ref is not None and best_ref <= fastest_ref * (1.0 + noise.drift_warn):
            break
        again, again_ref = session()
        retries += 1
        if fastest_ref is None:  # the first group: judge further sessions by the faster of its two
            fastest_ref = min(best_ref, again_ref)
        if again_ref < best_ref:
            best, best_ref = again, again_ref
    return best, retries


@dataclass
class GroupRun:
    """One run appending groups of items to `output`, which already holds `existing` rows."""

    profile: DeviceProfile
    backend: Backend
    sampler: Any
    reference: Item
    output: Path
    columns: Sequence[str]
    fingerprint: str
    _baseline: float | None = field(default=None, init=False)  # the file's first reference
    _fastest: float | None = field(default=None, init=False)  # the fastest reference so far
    _run_id: str = field(default="", init=False)

    def run(
        self, items: Sequence[Item], existing: Sequence[Mapping[str, str]], on_progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Measure `items` group by group; `on_progress(done, total)` once before the first group
        and after each group is on disk. Returns the rows written."""
        group_size = self.profile.noise.group_size
        first_group = max((int(r["group"]) for r in existing if r.get("group", "").isdigit()), default=-1) + 1
        refs = [float(r["ref_latency_ms"]) for r in existing if r.get("ref_latency_ms")]
        self._baseline = refs[0] if refs else None  # ref_drift is relative to the file's first group
        self._fastest = min(refs) if refs else None  # the machine's calm speed so far, for group retries
        self._run_id = datetime.now().strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}"
        written: list[dict[str, Any]] = []
        ref_runner = self.backend.prepare(self.reference.build(), self.reference.input_shape, self.reference.key)
        try:
            if on_progress is not None:
                on_progress(0, len(items))
            for g, start in enumerate(range(0, len(items), group_size)):
                rows = self._group(items[start : start + group_size], first_group + g, ref_runner)
                append_rows(self.output, rows, self.columns)
                written += rows
                if on_progress is not None:
                    on_progress(len(written), len(items))
        finally:
            ref_runner.close()
        return written

    def _group(self, group: Sequence[Item], number: int, ref_runner: Runner) -> list[dict[str, Any]]:
        runners: dict[str, Runner] = {}
        try:
            for item in group:
                runners[item.key] = self.backend.prepare(item.build(), item.input_shape, item.key)
            all_runners = {**runners, self.reference.key: ref_runner}
            measured, retries = measure_group(
                self.profile, self.backend, self.sampler, all_runners, self.reference.key, self._fastest
            )
        finally:
            for runner in runners.values():
                runner.close()
        ref_ms = measured[self.reference.key].latency_ms
        self._baseline = ref_ms if self._baseline is None else self._baseline
        self._fastest = ref_ms if self._fastest is None else min(self._fastest, ref_ms)
        context = dict(group=number, group_retries=retries, run_id=self._run_id, timestamp=_now())
        context.update(device=self.profile.name, supernet=self.profile.supernet, fingerprint=self.fingerprint)
        anchor = anchor_ms(self.profile, self._baseline)
        return [
            {**normalised_row(item.fields, measured[item.key], ref_ms, self._baseline, anchor), **context}
            for item in group
        ]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
