"""torch on an NVIDIA GPU: CUDA events around the timed launches, after warm-up.

`torch.cuda` is the boundary to the hardware: every CUDA call of the GPU backends goes
through the module `require_cuda` returns, which tests without a GPU replace by a stand-in.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from predictors.measure.backend import Backend, Model, require_module, versions_of
from predictors.measure.optional import GPU_EXTRA, MissingPackageError
from predictors.measure.runner import CudaEventRunner, Runner
from predictors.measure.torch_cpu import inference_call

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def require_cuda(purpose: str, gpu_index: int = 0) -> ModuleType:
    """`torch.cuda`, checked: a CUDA build of torch that sees GPU `gpu_index`."""
    cuda = torch.cuda
    if not cuda.is_available():
        raise MissingPackageError(
            f"{purpose} needs an NVIDIA GPU and a CUDA build of torch; torch {torch.__version__} sees no CUDA device "
            f"(a CPU build, or no NVIDIA driver): install a CUDA build of torch, then {GPU_EXTRA}"
        )
    count = cuda.device_count()
    if not 0 <= gpu_index < count:
        raise ValueError(f"gpu_index = {gpu_index} is not allowed; this machine has GPUs 0..{count - 1}")
    return cuda


def cuda_versions(cuda: Any) -> dict[str, str]:
    out = versions_of("torch")
    out["cuda"] = str(torch.version.cuda)
    out["cudnn"] = str(torch.backends.cudnn.version())
    return out


class TorchCudaBackend(Backend):
    name = "torch-cuda"

    def __init__(self, *args: Any, device: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cuda = require_cuda(f"backend {self.name}", self.gpu_index)
        self.device = torch.device(device or f"cuda:{self.gpu_index}")
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels

    def prepare(self, model: Model, input_shape: Sequence[int], key: str) -> Runner:
        dtype = DTYPES[self.precision]
        module = copy.deepcopy(require_module(model, self.name)).eval().to(self.device, dtype)
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(self.device, dtype)
        return CudaEventRunner(inference_call(module, x), self.cuda)

    def versions(self) -> dict[str, str]:
        return cuda_versions(self.cuda)

    def hardware(self) -> str:
        return str(self.cuda.get_device_name(self.gpu_index))

    def close(self) -> None:
        torch.backends.cudnn.benchmark = self._cudnn_benchmark
