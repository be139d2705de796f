"""TensorRT (10 and 11): ONNX -> engine, built once per sub-network and cached on disk.

Engines are built from strongly typed networks: the precision lives in the ONNX graph (an FP16
graph for `fp16`, see `ofa.export.export_onnx(fp16=True)`), never in builder flags. That is
the only way on TensorRT 11, which removed `BuilderFlag.FP16`, and it is allowed on 10.x
(`NetworkDefinitionCreationFlag.STRONGLY_TYPED`; 11 accepts and ignores the flag). FP32
engines keep TensorRT's default math (TF32 on Ampere and newer).

The engine cache lives in `workdir/engines/`, one `<hash>.engine` per (sub-network key,
precision, input shape, TensorRT version, GPU), with a JSON sidecar naming them. Timing runs
`execute_async_v3` on a dedicated CUDA stream between CUDA events (`CudaEventRunner`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ofa.export import export_onnx
from ofa.io import atomic_write_bytes, atomic_write_json
from predictors.measure.backend import Backend, Model
from predictors.measure.optional import import_tensorrt
from predictors.measure.runner import CudaEventRunner
from predictors.measure.torch_cuda import cuda_versions, require_cuda

WORKSPACE_MB = 1024
_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def torch_dtype(trt: ModuleType, dtype: Any) -> torch.dtype:
    for name, torch_type in _TORCH_DTYPES.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_type
    raise ValueError(f"TensorRT tensor type {dtype} has no torch equivalent here")


def strongly_typed_flags(trt: ModuleType) -> int:
    """Network creation flags: STRONGLY_TYPED where the enum has it (10.x; a no-op on 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(trt: ModuleType, logger: Any, onnx_bytes: bytes, workspace_mb: int = WORKSPACE_MB) -> bytes:
    """Serialized engine of an ONNX graph, built as a strongly typed network."""
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors or 'no error reported'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build an engine for this graph (see its log above)")
    return bytes(serialized)


def onnx_input_is_fp16(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


class TensorRTRunner(CudaEventRunner):
    """An execution context with its I/O buffers (torch tensors on the GPU) bound by address."""

    def __init__(
        self, trt: ModuleType, engine: Any, cuda: Any, stream: Any, device: torch.device, input_shape: Sequence[int]
    ) -> None:
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.engine, self.context = engine, context  # kept alive as long as the runner
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        generator = torch.Generator().manual_seed(0)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = torch_dtype(trt, engine.get_tensor_dtype(name))
            shape = tuple(engine.get_tensor_shape(name))
            if is_input and any(s < 0 for s in shape):  # a dynamic graph: fix this input's shape
                context.set_input_shape(name, tuple(input_shape))
                shape = tuple(input_shape)
            if is_input:
                buffer = torch.randn(shape, generator=generator).to(device, dtype)
                self.inputs[name] = buffer
            else:
                shape = tuple(context.get_tensor_shape(name)) if any(s < 0 for s in shape) else shape
                buffer = torch.zeros(shape, dtype=dtype, device=device)
                self.outputs[name] = buffer
            context.set_tensor_address(name, buffer.data_ptr())
        handle = stream.cuda_stream

        def run() -> None:
            if not context.execute_async_v3(handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")

        super().__init__(run, cuda, stream)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Output for input `x` (one-input engines): for checking the engine against torch."""
        (buffer,) = self.inputs.values()
        buffer.copy_(x.to(buffer.device, buffer.dtype))
        self.sync()
        self.run()
        self.sync()
        (out,) = self.outputs.values()
        return out.detach().cpu().clone()


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, *args: Any, device: str | None = None, workspace_mb: int = WORKSPACE_MB, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trt = import_tensorrt()
        self.cuda = require_cuda(f"backend {self.name}", self.gpu_index)
        self.device = torch.device(device or f"cuda:{self.gpu_index}")
        self.workspace_mb = int(workspace_mb)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.stream = self.cuda.Stream(device=self.device)
        self.engines_built = 0

    @property
    def trt_version(self) -> str:
        return str(getattr(self.trt, "__version__", "?"))

    def onnx_file(self, model: Model, input_shape: Sequence[int], key: str) -> Path:
        fp16 = self.precision == "fp16"
        if isinstance(model, nn.Module):
            path = self.file_for(f"{key}|{tuple(input_shape)}|{self.precision}|{self.onnx_exporter}", ".onnx")
            if not path.is_file():
                export_onnx(model, input_shape, path, fp16=fp16, exporter=self.onnx_exporter)
            return path
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} not found")
        if onnx_input_is_fp16(path) != fp16:
            raise ValueError(
                f"{path} is not an {'FP16' if fp16 else 'FP32'} graph; TensorRT builds {self.precision} engines from "
                f"{'FP16' if fp16 else 'FP32'} graphs (ofa.export.export_onnx(..., fp16={fp16}))"
            )
        return path

    def engine_identity(self, key: str, input_shape: Sequence[int]) -> dict[str, Any]:
        return {
            "key": key,
            "precision": self.precision,
            "input_shape": list(input_shape),
            "tensorrt": self.trt_version,
            "gpu": self.hardware(),
        }

    def engine_path(self, key: str, input_shape: Sequence[int]) -> Path:
        identity = json.dumps(self.engine_identity(key, input_shape), sort_keys=True)
        if self.workdir is None:
            raise ValueError("backend tensorrt needs a workdir for its engine cache")
        return self.workdir / "engines" / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.engine"

    def engine(self, model: Model, input_shape: Sequence[int], key: str) -> Any:
        """The deserialized engine, from the cache or built (and cached) now."""
        path = self.engine_path(key, input_shape)
        if path.is_file():
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                return engine
            path.unlink()  # stale (another TensorRT build or GPU): rebuild below
        onnx_path = self.onnx_file(model, input_shape, key)
        data = build_engine(self.trt, self.logger, onnx_path.read_bytes(), self.workspace_mb)
        if isinstance(model, nn.Module) and not self.keep_exports:
            onnx_path.unlink(missing_ok=True)  # the engine is cached; the graph was only its source
        self.engines_built += 1
        atomic_write_bytes(path, data)
        atomic_write_json(path.with_suffix(".json"), self.engine_identity(key, input_shape))
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the engine it just built ({path})")
        return engine

    def prepare(self, model: Model, input_shape: Sequence[int], key: str) -> TensorRTRunner:
        engine = self.engine(model, input_shape, key)
        return TensorRTRunner(self.trt, engine, self.cuda, self.stream, self.device, input_shape)

    def versions(self) -> dict[str, str]:
        return {**cuda_versions(self.cuda), "tensorrt": self.trt_version}

    def hardware(self) -> str:
        return str(self.cuda.get_device_name(self.gpu_index))
