"""Export of static sub-networks: ONNX graphs (FP32 or FP16) and `arch.json` + safetensors.

`export_onnx` writes a static-shape ONNX graph of any eval-mode module (a sub-network from
`OFAMobileNetV3.extract_subnet`, or one of its layers). `fp16=True` converts the whole graph
to half precision, inputs and outputs included: TensorRT 11 has no FP16 builder flag and
builds FP16 engines from FP16 graphs as strongly typed networks.

`save_subnet` / `load_subnet` store a sub-network as `arch.json` (the arch, the whole space
and its fingerprint) plus `weights.safetensors`; loading rebuilds `ofa.networks.MobileNetV3`
without the supernet and refuses a directory made for another space.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofa.io import atomic_write_bytes, atomic_write_json, reading
from ofa.networks.mobilenet_v3 import MobileNetV3
from ofa.space import ArchConfig, MBV3Space

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"
SUBNET_FORMAT = 1


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters log progress and deprecation notes on every call; keep the console clean."""
    loggers = [
        logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
) -> Path:
    """Write `model` (eval mode, on the CPU) as a static-shape ONNX graph with input `input`
    of `input_shape` and output `logits`; `fp16` makes every float tensor half precision.
    `exporter` is `dynamo` (torch.export + onnxscript, the supported path) or `torchscript`
    (the legacy tracer, faster). The file is written atomically and checked with onnx."""
    import onnx

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter = {exporter!r} is not allowed; allowed: {', '.join(EXPORTERS)}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape = {list(input_shape)} must be positive integers")
    if int(opset) < 13:
        raise ValueError(f"opset = {opset} is too old; use 13 or newer")
    model = copy.deepcopy(model).cpu().eval()
    dtype = torch.float16 if fp16 else torch.float32
    model = model.to(dtype)
    example = torch.zeros(shape, dtype=dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        kwargs: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=int(opset))
        with _quiet_exporter(), torch.no_grad():
            if exporter == "dynamo":
                torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, verbose=False, **kwargs)
            else:
                torch.onnx.export(model, (example,), tmp, dynamo=False, **kwargs)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# --- arch.json + weights.safetensors ---------------------------------------------------------
def save_subnet(
    directory: str | os.PathLike, space: MBV3Space, arch: ArchConfig, model: nn.Module, **extra: Any
) -> Path:
    """Write `arch.json` (arch, space, fingerprint, `extra` metadata) and `weights.safetensors`
    (every parameter and buffer of `model`, a static sub-network of `arch`)."""
    from safetensors.torch import save

    arch = space.validate(arch)
    if isinstance(model, MobileNetV3) and (model.arch != arch or model.space.fingerprint() != space.fingerprint()):
        raise ValueError(f"the model is sub-network {model.arch} of space {model.space.fingerprint()}, not {arch}")
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    dropout = next((m.p for m in model.modules() if isinstance(m, nn.Dropout)), 0.0)
    meta = {
        "format": SUBNET_FORMAT,
        "fingerprint": space.fingerprint(),
        "arch": arch.to_dict(),
        "space": space.to_dict(),
        "dropout": dropout,
        "weights": WEIGHTS_FILE,
        **extra,
    }
    atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"fingerprint": space.fingerprint()}))
    atomic_write_json(directory / ARCH_FILE, meta)
    return directory


def read_arch_json(directory: str | os.PathLike) -> tuple[MBV3Space, ArchConfig, dict[str, Any]]:
    """The space, the arch and the whole metadata of a saved sub-network, checked."""
    path = Path(directory) / ARCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a saved sub-network directory")
    try:
        meta = json.loads(path.read_text())
        space = MBV3Space.from_dict(meta["space"])
        recorded = meta["fingerprint"]
        arch = ArchConfig.from_dict(meta["arch"], space)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid arch.json ({type(exc).__name__}: {exc})") from None
    if space.fingerprint() != recorded:
        raise ValueError(
            f"{path}: its space hashes to {space.fingerprint()} but the file records {recorded}; "
            "the file was edited or written by an incompatible version"
        )
    return space, arch, meta


def load_subnet(directory: str | os.PathLike, space: MBV3Space | None = None) -> MobileNetV3:
    """Rebuild the static `MobileNetV3` saved by `save_subnet` (eval mode). With `space`
    given, a sub-network of another space (fingerprint) is refused."""
    from safetensors.torch import load_file

    saved_space, arch, meta = read_arch_json(directory)
    if space is not None and space.fingerprint() != saved_space.fingerprint():
        raise ValueError(
            f"{Path(directory) / ARCH_FILE} belongs to space fingerprint {saved_space.fingerprint()} "
            f"({saved_space.name}), not {space.fingerprint()} ({space.name})"
        )
    weights = Path(directory) / str(meta.get("weights", WEIGHTS_FILE))
    if weights.resolve().parent != Path(directory).resolve():
        raise ValueError(f"{Path(directory) / ARCH_FILE}: weights = {meta.get('weights')!r} is not allowed; "
                         "it must name a file beside arch.json")  # fmt: skip
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found beside {ARCH_FILE}")
    model = MobileNetV3(saved_space, arch, float(meta.get("dropout", 0.0)))
    with reading(weights, "sub-network weights file (safetensors)"):
        state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match sub-network {arch}: "
            f"missing {sorted(missing)[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {sorted(unexpected)[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    return model.eval()
