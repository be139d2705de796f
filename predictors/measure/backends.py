"""The one registry of measurement backends: name -> where its class lives, the precisions it
measures, and whether it needs an NVIDIA GPU.

Profiles (`predictors.measure.profile`), the backend classes and the commands all read it; a
backend's class is imported only when it is made, so TensorRT and CUDA stay optional.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from predictors.measure.backend import Backend


@dataclass(frozen=True)
class BackendSpec:
    name: str
    module: str  # the module that defines the class (imported on demand)
    cls: str
    precisions: tuple[str, ...]
    needs_gpu: bool


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("onnxruntime-cpu", "predictors.measure.ort_cpu", "OnnxRuntimeCpuBackend", ("fp32", "int8"), False),
        BackendSpec("torch-cpu", "predictors.measure.torch_cpu", "TorchCpuBackend", ("fp32",), False),
        BackendSpec("torch-cuda", "predictors.measure.torch_cuda", "TorchCudaBackend", ("fp32", "fp16"), True),
        BackendSpec("tensorrt", "predictors.measure.tensorrt", "TensorRTBackend", ("fp32", "fp16"), True),
    )
}
GPU_BACKENDS = tuple(name for name, spec in BACKENDS.items() if spec.needs_gpu)


def backend_spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise ValueError(f"backend = {name!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def needs_gpu(name: str) -> bool:
    """Whether backend `name` measures on an NVIDIA GPU."""
    return backend_spec(name).needs_gpu


def runs_here(name: str) -> bool:
    """Whether backend `name` can measure on this machine: a CPU backend always, a GPU backend
    where torch sees a CUDA device (its optional packages are checked when it is made)."""
    if not needs_gpu(name):
        return True
    import torch

    return torch.cuda.is_available()


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name`, imported now."""
    spec = backend_spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)
