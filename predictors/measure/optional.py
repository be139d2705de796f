"""Optional hardware stacks (TensorRT, NVML, CUDA) import lazily and fail in one clear line."""

from __future__ import annotations

import importlib
from types import ModuleType

from ofa.errors import UserError

GPU_EXTRA = "pip install -e '.[gpu]'"


class MissingPackageError(UserError):
    """An optional package or device this measurement needs is not there (one line, no traceback)."""


def import_optional(module: str, package: str, purpose: str) -> ModuleType:
    """Import `module` or raise a `MissingPackageError` naming `package` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingPackageError(
            f"{purpose} needs the Python package {package} (module {module!r} does not import: {exc}); "
            f"install it with: {GPU_EXTRA}"
        ) from None


def import_tensorrt() -> ModuleType:
    return import_optional("tensorrt", "tensorrt", "backend tensorrt")


def import_pynvml() -> ModuleType:
    return import_optional("pynvml", "nvidia-ml-py", "power sampler nvml")
