"""Stand-ins for the hardware libraries this machine lacks, injected where they are imported.

Only the library boundary is faked: `pynvml` (NVML), `tensorrt` and the `torch.cuda` calls of
the GPU backends. Our code above them runs for real. The fake TensorRT engine really computes:
it runs the ONNX graph it was "built" from (with ONNX Runtime) on the memory whose addresses
the backend bound with `set_tensor_address`, so a wrong binding, shape or dtype shows up as a
wrong output.
"""

from __future__ import annotations

import ctypes
import enum
import time
import types
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

# --- NVML ------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that moves only when told (a GPU inference "takes" `step` seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 12: "NVML Shared Library Not Found"}.get(self.value, f"code {self.value}")


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
    def __init__(self) -> None:
        super().__init__(3)


class _Nvml:
    """The state behind a fake `pynvml` module; its nvml* methods become the module's functions."""

    def __init__(self, clock: FakeClock, watts: Any, energy_counter: str, init_error: int | None) -> None:
        self.clock, self.energy_counter, self.init_error = clock, energy_counter, init_error
        self.power = watts if callable(watts) else (lambda t: watts)
        self.calls = {"power": 0, "energy": 0, "init": 0, "shutdown": 0}
        self.t, self.mj = clock(), 123_456_789.0

    def _integrate(self) -> None:
        """Energy since the last reading: the power curve integrated (midpoint rule, fine steps)."""
        t0, t1 = self.t, self.clock()
        if t1 > t0:
            mids = t0 + (np.arange(1000) + 0.5) * (t1 - t0) / 1000
            self.mj += float(np.mean([self.power(t) for t in mids])) * (t1 - t0) * 1e3
        self.t = t1

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.calls["init"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls["shutdown"] += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:  # noqa: N802
        return b"Fake GPU"

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "999.1"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        self.calls["energy"] += 1
        if self.energy_counter == "unsupported":
            raise NVMLError_NotSupported()
        if self.energy_counter == "stuck":
            return 123_456_789
        self._integrate()
        return int(self.mj)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        self.calls["power"] += 1
        return int(round(self.power(self.clock()) * 1e3))


def fake_pynvml(
    clock: FakeClock,
    watts: Any = 50.0,
    energy_counter: str = "works",
    init_error: int | None = None,
) -> types.ModuleType:
    """A `pynvml` module whose GPU draws `watts` (a number or a function of the clock).
    energy_counter: "works" (mJ since "driver load", Volta+), "unsupported" (raises
    NVMLError_NotSupported, as before Volta) or "stuck" (never advances)."""
    m = types.ModuleType("pynvml")
    m.NVML_ERROR_NOT_SUPPORTED = 3
    m.NVML_ERROR_LIBRARY_NOT_FOUND = 12
    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = NVMLError_NotSupported
    nvml = _Nvml(clock, watts, energy_counter, init_error)
    m.calls = nvml.calls
    for name in dir(nvml):
        if name.startswith("nvml"):
            setattr(m, name, getattr(nvml, name))
    return m


# --- CUDA (torch.cuda) -------------------------------------------------------------------------------


class FakeEvent:
    """CUDA event stand-in: records the host clock (the fake GPU is the CPU, synchronous)."""

    recorded_streams: list[Any] = []

    def __init__(self, enable_timing: bool = False) -> None:
        self.enable_timing = enable_timing
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        FakeEvent.recorded_streams.append(stream)
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.enable_timing and self.t is not None and end.t is not None
        return (end.t - self.t) * 1e3


class FakeStream:
    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.cuda_stream = 0xC0FFEE
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1


def fake_cuda(monkeypatch: Any) -> None:
    """Make `torch.cuda` report one GPU and use the fake events and streams."""
    import torch

    FakeEvent.recorded_streams = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)


# --- TensorRT ------------------------------------------------------------------------------------------


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


_ONNX_TO_TRT = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF}
_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16}


def _array_at(address: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype=dtype).reshape(shape)


class _Logger:
    WARNING = 2
    INFO = 3

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.model: onnx.ModelProto | None = None


class _Config:
    def __init__(self) -> None:
        self.flags: set[Any] = set()
        self.pools: dict[Any, int] = {}

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pools[pool] = size


class _Bound:
    """Classes of one fake `tensorrt` module: `trt` is that module (its log and version)."""

    trt: types.ModuleType

    @classmethod
    def header(cls) -> bytes:
        return f"FAKETRT{cls.trt.__version__}|".encode()


class _Builder(_Bound):
    def __init__(self, logger: _Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        self.trt.log["network_flags"].append(flags)
        return _Network(flags)

    def create_builder_config(self) -> _Config:
        return _Config()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        if network.model is None or self.trt.MemoryPoolType.WORKSPACE not in config.pools:
            return None
        self.trt.log["builds"] += 1
        self.trt.log["config_flags"].append(set(config.flags))
        return self.header() + network.model.SerializeToString()


class _OnnxParser(_Bound):
    def __init__(self, network: _Network, logger: _Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]

    def parse(self, data: bytes) -> bool:
        try:
            model = onnx.load_from_string(data)
        except Exception as exc:  # the real parser reports, it does not raise
            self.errors.append(f"not an ONNX model: {exc}")
            return False
        self.trt.log["parsed_input_types"].append(model.graph.input[0].type.tensor_type.elem_type)
        self.network.model = model
        return True


class _Engine:
    def __init__(self, model: onnx.ModelProto, trt: types.ModuleType) -> None:
        self.model, self.trt = model, trt
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.io: dict[str, tuple[TensorIOMode, tuple[int, ...], DataType]] = {}
        for mode, values in ((TensorIOMode.INPUT, model.graph.input), (TensorIOMode.OUTPUT, model.graph.output)):
            for v in values:
                t = v.type.tensor_type
                shape = tuple(d.dim_value for d in t.shape.dim)
                self.io[v.name] = (mode, shape, _ONNX_TO_TRT[t.elem_type])
        self.names = list(self.io)

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.io[name][0]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name][1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.io[name][2]

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return tuple(shape) == self.engine.io[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.engine.io[name][1]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.engine.trt.log["streams"].append(stream_handle)
        if set(self.addresses) != set(self.engine.names):
            return False  # as the real one: every I/O tensor needs an address
        io = self.engine.io
        feed = {
            name: _array_at(self.addresses[name], shape, _NP[dtype]).copy()
            for name, (mode, shape, dtype) in io.items()
            if mode is TensorIOMode.INPUT
        }
        outputs = self.engine.session.run(None, feed)
        out_names = [n for n, (mode, _, _) in io.items() if mode is TensorIOMode.OUTPUT]
        for name, value in zip(out_names, outputs):
            _, shape, dtype = io[name]
            _array_at(self.addresses[name], shape, _NP[dtype])[...] = value
        return True


class _Runtime(_Bound):
    def __init__(self, logger: _Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
        header = self.header()
        if not bytes(data).startswith(header):
            return None  # an engine of another TensorRT version does not load
        return _Engine(onnx.load_from_string(bytes(data)[len(header) :]), self.trt)


def fake_tensorrt(version: str = "10.13.0") -> types.ModuleType:
    """A `tensorrt` module of the given major version: 10.x has BuilderFlag.FP16, 11.x does not
    (it removed the weak-typing flags); both take NetworkDefinitionCreationFlag.STRONGLY_TYPED."""
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    major = int(version.split(".")[0])
    m.DataType = DataType
    m.TensorIOMode = TensorIOMode
    m.log = {"builds": 0, "network_flags": [], "config_flags": [], "parsed_input_types": [], "streams": []}
    flag_names = ["TF32", "REFIT", "SPARSE_WEIGHTS"] + (["FP16", "INT8", "BF16"] if major < 11 else [])
    m.BuilderFlag = enum.Enum("BuilderFlag", flag_names)
    m.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    m.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
    m.Logger = _Logger
    for name, base in (("Builder", _Builder), ("OnnxParser", _OnnxParser), ("Runtime", _Runtime)):
        setattr(m, name, type(name, (base,), {"trt": m}))
    return m
