"""The source devices of a transferred predictor: what a device already profiled says about any
sub-network of the space.

A source is named either as a device profile (`hw_profiles/<name>/`: its fitted predictor of
the target, `predictors/<target>/predictor.json`, else a predictor fitted now on its
`measurements.csv`) or as a path to a measurement table (a predictor is fitted on it now). A
source of another space is refused in one line (its fingerprint differs from the target's), and
so is a name that is neither a file nor a device with a predictor or measurements.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofa.archtable import named_space, read_csv
from ofa.space import ArchConfig, MBV3Space
from predictors.candidates import Features, choose, cross_validate, make_candidates
from predictors.models import build_model
from predictors.predictor import JSON_NAME, Predictor, load_predictor
from predictors.table import read_table

__all__ = ["Source", "resolve_sources", "source_latencies"]

SOURCE_MODELS = ("ridge", "gbt")  # what a source table is fitted with (the choice by 5-fold CV)


@dataclass(frozen=True)
class Source:
    """A device already profiled, as a function of the architecture."""

    name: str  # as given (device name or table path)
    kind: str  # "device predictor", "device measurements" or "table"
    path: Path  # the predictor.json or the table read
    sha256: str  # of that file
    predictor: Predictor

    def record(self) -> dict[str, Any]:
        """What predictor.json records of this source."""
        space = self.predictor.space
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "sha256": self.sha256,
                "target": self.predictor.target, "model": self.predictor.describe(),
                "space_name": space.name, "space_fingerprint": space.fingerprint()}  # fmt: skip


def _refuse_other_space(name: str, path: Path, theirs: set[str], space: MBV3Space) -> None:
    other = sorted(theirs - {space.fingerprint()})
    if other:
        label = named_space(other[0])
        raise ValueError(
            f"source {name!r} ({path}) belongs to space {label or 'unnamed'} (fingerprint {other[0]}), not to the "
            f"target's space {space.name} ({space.fingerprint()}); a source must be profiled on the same space"
        )


def _fit_table(name: str, path: Path, kind: str, target: str, space: MBV3Space, seed: int) -> Source:
    """A source predictor fitted now on a measurement table (ridge or trees, by 5-fold CV)."""
    _refuse_other_space(name, path, read_csv(path, f"source {name!r}").fingerprints(), space)
    try:
        data = read_table(path, target, space)
    except ValueError as exc:
        raise ValueError(f"source {name!r}: {exc}") from None
    if len(data) < 10:
        raise ValueError(f"source {name!r} ({path}) has {len(data)} rows; a source needs at least 10 measurements")
    candidates = make_candidates(SOURCE_MODELS, data.y, "auto", {}, False)
    keys = [a.key() for a in data.archs]
    folds = [np.array(sorted(f)) for f in np.array_split(np.random.default_rng(seed).permutation(len(keys)), 5)]
    scores = cross_validate(candidates, Features(data.arrays, space, None), data.y, folds, seed, False, None)
    chosen = choose(scores).candidate
    predictor = Predictor(space, target, build_model(chosen.kind, chosen.config), chosen.transform)
    predictor.fit_arrays(data.arrays, data.y, seed)
    return Source(name, kind, path, data.sha256, predictor)


def _device(name: str, target: str, space: MBV3Space, root: Path, seed: int) -> Source:
    folder = root / name
    fitted = folder / "predictors" / target / JSON_NAME
    if fitted.is_file():
        try:
            predictor = load_predictor(fitted, space)
        except ValueError as exc:
            raise ValueError(f"source {name!r}: {exc}") from None
        if predictor.target != target:
            raise ValueError(f"source {name!r}: {fitted} predicts {predictor.target!r}, not {target!r}")
        return Source(name, "device predictor", fitted, hashlib.sha256(fitted.read_bytes()).hexdigest(), predictor)
    if (folder / "measurements.csv").is_file():
        return _fit_table(name, folder / "measurements.csv", "device measurements", target, space, seed)
    usable = sorted(p.parent.parent.parent.name for p in root.glob(f"*/predictors/{target}/{JSON_NAME}"))
    usable += sorted(p.parent.name for p in root.glob("*/measurements.csv") if p.parent.name not in usable)
    raise FileNotFoundError(
        f"source {name!r} is neither a table file nor a device with {target} measurements or a predictor "
        f"({fitted} and {folder / 'measurements.csv'} do not exist); devices that can be sources: "
        f"{', '.join(usable) or 'none'}"
    )


def resolve_sources(
    names: Sequence[str],
    space: MBV3Space,
    target: str,
    profiles_dir: str | os.PathLike,
    seed: int = 0,
) -> list[Source]:
    """Each name as a `Source` of `target` for `space`: an existing file is a measurement table,
    anything else a device profile under `profiles_dir`."""
    names = [str(n).strip() for n in names]
    if any(not n for n in names):
        raise ValueError("sources has an empty name; give device names (hw_profiles/<name>) or table paths")
    if len(set(names)) < len(names):
        raise ValueError(f"sources = {names} names a source twice")
    out = []
    for name in names:
        path = Path(name)
        if path.is_file():
            out.append(_fit_table(name, path, "table", target, space, seed))
        elif path.suffix == ".csv" or os.sep in name:
            raise FileNotFoundError(f"source {name!r}: table {path} does not exist")
        else:
            out.append(_device(name, target, space, Path(profiles_dir), seed))
    return out


def source_latencies(sources: Sequence[Source], archs: Sequence[ArchConfig]) -> np.ndarray:
    """(len(archs), len(sources)) predicted latencies, floored at a thousandth of each column's
    median so that logs exist (a linear source model may extrapolate below zero)."""
    if not sources:
        return np.zeros((len(archs), 0))
    S = np.column_stack([s.predictor.predict(archs) for s in sources])
    floor = 1e-3 * np.maximum(np.median(np.abs(S), axis=0), 1e-12)
    return np.maximum(S, floor)
