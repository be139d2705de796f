"""The backend interface: turn a static sub-network (or its ONNX file) into a `Runner`.

A backend lives for one measurement session (`with make_backend(...) as backend:`): it may
change process-wide settings (torch threads, cuDNN autotuning) and restores them on exit.
Intermediate files (ONNX exports, TensorRT engines) go to `workdir`, keyed by the caller's
`key` so that a rerun reuses them; ONNX exports are removed once loaded unless `keep_exports`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from predictors.measure.backends import BACKENDS
from predictors.measure.runner import Runner

Model = nn.Module | str | os.PathLike  # a static module or the path of its ONNX export


class Backend:
    """Base class: `prepare(model, input_shape, key) -> Runner`, versions, host description.
    A subclass sets `name`; its precisions and whether it uses a GPU come from the registry
    (`predictors.measure.backends.BACKENDS`)."""

    name = "base"

    @property
    def precisions(self) -> tuple[str, ...]:
        spec = BACKENDS.get(self.name)
        return spec.precisions if spec else ("fp32",)

    @property
    def uses_gpu(self) -> bool:
        spec = BACKENDS.get(self.name)
        return bool(spec and spec.needs_gpu)

    def __init__(
        self,
        precision: str = "fp32",
        batch_size: int = 1,
        threads: int | None = None,
        gpu_index: int = 0,
        workdir: str | os.PathLike | None = None,
        onnx_exporter: str = "dynamo",
        keep_exports: bool = False,
        clock: str = "wall",
    ) -> None:
        if precision not in self.precisions:
            raise ValueError(
                f"precision = {precision!r} is not supported by backend {self.name}; "
                f"allowed: {', '.join(self.precisions)}"
            )
        if clock != "wall" and (self.uses_gpu or threads != 1):
            raise ValueError(
                f"clock = {clock!r} times the CPU work of the calling thread; it needs a CPU backend with "
                f"threads = 1 (backend {self.name}, threads = {threads})"
            )
        self.precision = precision
        self.clock = clock
        self.batch_size = int(batch_size)
        self.threads = threads
        self.gpu_index = int(gpu_index)
        self.workdir = Path(workdir) if workdir is not None else None
        self.onnx_exporter = onnx_exporter
        # ONNX exports are intermediate (a few MB each, hundreds per profile): deleted once
        # loaded unless kept, e.g. to measure the same sub-networks again.
        self.keep_exports = keep_exports

    # --- to implement ----------------------------------------------------------------------
    def prepare(self, model: Model, input_shape: Sequence[int], key: str) -> Runner:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {"python": platform.python_version()}

    def hardware(self) -> str:
        return cpu_description()

    # --- shared ------------------------------------------------------------------------------
    def host(self) -> str:
        return socket.gethostname()

    def close(self) -> None:
        """Restore what the backend changed in the process."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def file_for(self, key: str, suffix: str) -> Path:
        """A work file named after `key` (hashed: keys hold characters file systems dislike)."""
        if self.workdir is None:
            raise ValueError(f"backend {self.name} needs a workdir for its intermediate files")
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.workdir / f"{digest}{suffix}"


def require_module(model: Model, backend: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"backend {backend} measures torch modules; got {type(model).__name__} {model!s}")
    return model


def cpu_description() -> str:
    """`<cpu model> x<logical cores>` from /proc/cpuinfo where it exists."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()} ({sys.platform})"


def versions_of(*modules: str) -> dict[str, str]:
    """`{module: version}` of the imported modules named (plus Python)."""
    out = {"python": platform.python_version()}
    for name in modules:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "?"))
    return out
