"""ONNX Runtime on the CPU: the sub-network's ONNX export in an `InferenceSession`.

`int8` is static QDQ quantisation (ONNX Runtime's `quantize_static`, weights per tensor,
activations uint8) calibrated on a few random inputs: enough for latency, not a claim about
accuracy. Dynamic quantisation is not offered: on these convolutional nets it runs several
times slower than FP32.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ofa.export import INPUT_NAME, export_onnx
from predictors.measure.backend import Backend, Model, versions_of
from predictors.measure.runner import Runner


class OnnxRuntimeCpuBackend(Backend):
    name = "onnxruntime-cpu"

    def onnx_file(self, model: Model, input_shape: Sequence[int], key: str) -> Path:
        """The FP32 ONNX file of `model` (exported once per key), or the file given."""
        if not isinstance(model, nn.Module):
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX file {path} not found")
            return path
        path = self.file_for(f"{key}|{tuple(input_shape)}|{self.onnx_exporter}", ".onnx")
        if not path.is_file():
            export_onnx(model, input_shape, path, exporter=self.onnx_exporter)
        return path

    def quantized(self, fp32_path: Path, input_shape: Sequence[int], key: str) -> Path:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        path = self.file_for(f"{key}|{tuple(input_shape)}|{self.onnx_exporter}|int8", ".int8.onnx")
        if path.is_file():
            return path
        rng = np.random.default_rng(0)
        batches = [rng.standard_normal(tuple(input_shape)).astype(np.float32) for _ in range(4)]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.batches, None)
                return None if x is None else {INPUT_NAME: x}

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns per layer through the root logger
        try:
            quantize_static(
                str(fp32_path),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        finally:
            root.setLevel(level)
        shutil.move(tmp, path)
        return path

    def session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.threads or 0)  # 0: ONNX Runtime's default
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def prepare(self, model: Model, input_shape: Sequence[int], key: str) -> Runner:
        exported = isinstance(model, nn.Module)
        fp32 = self.onnx_file(model, input_shape, key)
        path = self.quantized(fp32, input_shape, key) if self.precision == "int8" else fp32
        session = self.session(path)
        if not self.keep_exports:  # the session holds the graph now
            for p in {path, fp32} if exported else {path} - {fp32}:
                p.unlink(missing_ok=True)
        (inp,) = session.get_inputs()
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        x = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(dtype)
        feed = {inp.name: x}
        return Runner(lambda: session.run(None, feed), clock=self.clock)

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime
        import torch

        del onnx, onnxruntime, torch  # imported so that their versions are recorded
        return versions_of("onnxruntime", "onnx", "torch")
