"""A fitted predictor: a model, its target transform, the space it belongs to, its quality.

Saved as `predictor.json` (metadata, JSON-able model state, held-out metrics) plus
`predictor.safetensors` beside it when the model has arrays: no pickle anywhere. Loading
checks the space fingerprint and the feature version and refuses a mismatch in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ofa.io import atomic_write_bytes, atomic_write_json
from ofa.space import ArchConfig, MBV3Space
from predictors.features import FEATURE_VERSION, ArchArrays, to_arrays
from predictors.models import Model, build_model

FORMAT = "ofa-hwnas/predictor"
FORMAT_VERSION = 1
JSON_NAME = "predictor.json"
TENSORS_NAME = "predictor.safetensors"
TRANSFORMS = ("none", "log")


def forward_transform(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log":
        if np.any(y <= 0):
            raise ValueError("transform = 'log' needs positive targets; use transform=none")
        return np.log(y)
    if transform == "none":
        return y
    raise ValueError(f"transform = {transform!r} is not allowed; allowed: {', '.join(TRANSFORMS)}")


def inverse_transform(z: np.ndarray, transform: str) -> np.ndarray:
    return np.exp(z) if transform == "log" else z


SOFT_MARGIN = 0.1  # of the measured range: how far past it a bounded prediction may go


def soft_bound(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values outside [lo, hi] squashed into a margin beyond it (tanh), strictly monotone: the
    ranking a search uses is unchanged, the figures it reports stay near what was measured."""
    m = max(SOFT_MARGIN * (hi - lo), 1e-12)
    y = np.where(y > hi, hi + m * np.tanh((y - hi) / m), y)
    return np.where(y < lo, lo - m * np.tanh((lo - y) / m), y)


def json_safe(obj: Any) -> Any:
    """NaN and infinities become null (strict JSON); numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class Predictor:
    """Predicts one target (`target`) for configs of one space; `metrics` are its held-out scores."""

    def __init__(
        self,
        space: MBV3Space,
        target: str,
        model: Model,
        transform: str = "none",
        metrics: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        bounds: tuple[float, float] | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform = {transform!r} is not allowed; allowed: {', '.join(TRANSFORMS)}")
        self.space, self.target, self.model, self.transform = space, target, model, transform
        # Predictions beyond this range (ofa-fit: the training targets' range, for accuracy) are
        # squashed into a small margin past it: a 3x400 MLP fitted on accuracies up to 94.6%
        # predicted 99.7% for archs that measured 90%.  Monotone, so rankings do not change.
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.info: dict[str, Any] = dict(info or {})
        # A predictor transferred from other devices (predictors.transfer_fit) names them here:
        # name, kind (device or table), file, its sha256, space name and fingerprint.
        self.sources: list[dict[str, Any]] = [dict(s) for s in sources or ()]

    @property
    def kind(self) -> str:
        return self.model.kind

    def fit_arrays(self, arrays: ArchArrays, y: np.ndarray, seed: int = 0, bound_to_targets: bool = False) -> Predictor:
        """Fit on `arrays` and targets `y`; `bound_to_targets`: bound later predictions softly to
        [min(y), max(y)] (`soft_bound`)."""
        if bound_to_targets:
            self.bounds = (float(np.min(y)), float(np.max(y)))
        self.model.fit(
            self.model.features(arrays, self.space), forward_transform(np.asarray(y, float), self.transform), seed
        )
        return self

    def predict_arrays(self, arrays: ArchArrays) -> np.ndarray:
        if len(arrays) == 0:
            return np.zeros(0)
        z = self.model.predict(self.model.features(arrays, self.space))
        y = np.asarray(inverse_transform(z, self.transform), dtype=np.float64)
        return y if self.bounds is None else soft_bound(y, *self.bounds)

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """One float64 prediction per config, in order (vectorised)."""
        return self.predict_arrays(to_arrays(archs, self.space))

    def describe(self) -> str:
        bounded = "" if self.bounds is None else f", soft-bounded to [{self.bounds[0]:.4g}, {self.bounds[1]:.4g}]"
        return self.model.describe() + (", log target" if self.transform == "log" else "") + bounded

    # --- persistence ------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write `predictor.json` (+ `predictor.safetensors`) into `out_dir`; returns the JSON path."""
        from safetensors.numpy import save as save_tensors

        out_dir = Path(out_dir)
        meta, arrays = self.model.state()
        tensors = None
        if arrays:
            blob = save_tensors({k: np.ascontiguousarray(v) for k, v in arrays.items()})
            atomic_write_bytes(out_dir / TENSORS_NAME, blob)
            tensors = {"file": TENSORS_NAME, "sha256": hashlib.sha256(blob).hexdigest()}
        else:
            (out_dir / TENSORS_NAME).unlink(missing_ok=True)  # a previous predictor's arrays
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "target": self.target,
            "transform": self.transform,
            "bounds": None if self.bounds is None else list(self.bounds),
            "space_name": self.space.name,
            "space_fingerprint": self.space.fingerprint(),
            "feature_version": FEATURE_VERSION,
            "model": {"kind": self.model.kind, "description": self.describe(), "config": self.model.config()},
            "metrics": self.metrics,
            "info": self.info,
            "sources": self.sources,
            "space": self.space.to_dict(),
            "tensors": tensors,
            "state": meta,
        }
        return atomic_write_json(out_dir / JSON_NAME, json_safe(doc))


def load_predictor(path: str | Path, space: MBV3Space) -> Predictor:
    """Load a predictor saved by `Predictor.save` (its folder or its `predictor.json`) for
    `space`; refuses, in one line, a predictor fitted for another space or feature version."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    if not path.is_file():
        raise FileNotFoundError(f"predictor {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"predictor {path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ofa-hwnas predictor (no format {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"predictor {path} has format version {doc.get('format_version')}; this code reads {FORMAT_VERSION}"
        )
    theirs, ours = doc.get("space_fingerprint"), space.fingerprint()
    if theirs != ours:
        raise ValueError(
            f"predictor {path} was fitted for space {doc.get('space_name')!r} (fingerprint {theirs}), "
            f"not for space {space.name!r} (fingerprint {ours}); refit it with ofa-fit for this space"
        )
    if doc.get("feature_version") != FEATURE_VERSION:
        raise ValueError(
            f"predictor {path} uses feature version {doc.get('feature_version')}; this code encodes "
            f"version {FEATURE_VERSION}; refit it with ofa-fit"
        )
    arrays: dict[str, np.ndarray] = {}
    if doc.get("tensors"):
        from safetensors.numpy import load as load_tensors

        tensor_path = path.parent / str(doc["tensors"]["file"])
        if tensor_path.resolve().parent != path.parent.resolve():
            raise ValueError(f"predictor {path}: tensors.file = {doc['tensors']['file']!r} is not allowed; "
                             "it must name a file beside predictor.json")  # fmt: skip
        if not tensor_path.is_file():
            raise FileNotFoundError(f"predictor {path} needs {tensor_path}, which does not exist")
        blob = tensor_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != doc["tensors"]["sha256"]:
            raise ValueError(f"{tensor_path} does not belong to {path} (its sha256 differs from the one recorded)")
        arrays = load_tensors(blob)
    try:
        spec = doc["model"]
        lut = doc["state"].get("lut_ms") if spec["kind"] == "lut" else None
        model = build_model(spec["kind"], spec["config"], lut=lut).load_state(doc["state"], arrays)
    except (KeyError, TypeError, AttributeError) as exc:  # a hand-edited or foreign model section
        raise ValueError(f"predictor {path}: its model section cannot be read ({type(exc).__name__}: {exc})") from None
    bounds = doc.get("bounds")
    predictor = Predictor(space, doc["target"], model, doc["transform"], doc.get("metrics"), doc.get("info"), bounds)
    predictor.sources = [dict(s) for s in doc.get("sources") or () if isinstance(s, Mapping)]
    return predictor
