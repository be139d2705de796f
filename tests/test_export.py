from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ofa.export import export_onnx, load_subnet, read_arch_json, save_subnet
from ofa.networks import MobileNetV3
from ofa.space import SPACES
from tests.conftest import calibrate_bn_, images, make_supernet

MNIST = SPACES["ofa_mbv3_mnist"]


@pytest.fixture(scope="module")
def supernet():
    return make_supernet(space=MNIST).eval()


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize(
    ("which", "exporter"),
    [("largest", "dynamo"), ("smallest", "torchscript"), ("random", "torchscript")],
)
def test_onnx_runtime_output_equals_torch(supernet, tmp_path, which, exporter):
    space = supernet.space
    arch = space.sample(torch.Generator().manual_seed(4)) if which == "random" else getattr(space, which)()
    supernet.set_active_subnet(arch)
    calibrate_bn_(supernet, torch.Generator().manual_seed(3))  # BN statistics of this sub-network
    model = supernet.extract_subnet(arch).eval()
    x = images(3, space.in_channels, arch.r, torch.Generator().manual_seed(0))
    path = export_onnx(model, x.shape, tmp_path / "net.onnx", exporter=exporter)
    with torch.no_grad():
        expected = model(x).numpy()
    got = run_onnx(path, x.numpy())
    assert got.shape == (3, space.num_classes)
    assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the output depends on the input
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # one self-contained file, no temp left


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_fp16_export_is_a_half_precision_graph(supernet, tmp_path, exporter):
    arch = supernet.space.smallest()
    model = supernet.extract_subnet(arch).eval()
    x = images(2, 1, arch.r, torch.Generator().manual_seed(1))
    path = export_onnx(model, x.shape, tmp_path / "net16.onnx", fp16=True, exporter=exporter)
    graph = onnx.load(str(path)).graph
    io_types = {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT16}
    float_types = {t.data_type for t in graph.initializer} - {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    assert float_types == {onnx.TensorProto.FLOAT16}, float_types
    got = run_onnx(path, x.numpy().astype(np.float16))
    assert got.dtype == np.float16
    with torch.no_grad():
        expected = model(x).numpy()
    scale = np.abs(expected).max()
    assert np.abs(got.astype(np.float32) - expected).max() <= 2e-2 * scale
    assert model.stem.conv.weight.dtype == torch.float32  # the caller's model is left in fp32


def test_export_validates_its_arguments(supernet, tmp_path):
    model = supernet.extract_subnet(supernet.space.smallest())
    with pytest.raises(ValueError, match="exporter = 'jit' is not allowed; allowed: dynamo, torchscript"):
        export_onnx(model, (1, 1, 20, 20), tmp_path / "x.onnx", exporter="jit")
    with pytest.raises(ValueError, match=r"input_shape = \[1, 0, 20\] must be positive"):
        export_onnx(model, (1, 0, 20), tmp_path / "x.onnx")


def test_save_load_round_trip_is_exact(supernet, tmp_path):
    arch = supernet.space.sample(torch.Generator().manual_seed(7))
    model = supernet.extract_subnet(arch).eval()
    save_subnet(tmp_path / "sub", supernet.space, arch, model, note="test")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["arch.json", "weights.safetensors"]
    meta = json.loads((tmp_path / "sub" / "arch.json").read_text())
    assert meta["fingerprint"] == MNIST.fingerprint() and meta["note"] == "test"
    loaded = load_subnet(tmp_path / "sub", space=MNIST)
    assert isinstance(loaded, MobileNetV3) and loaded.arch == arch and not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    x = images(2, 1, arch.r, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    space, read_arch, _ = read_arch_json(tmp_path / "sub")
    assert space == MNIST and read_arch == arch


def test_load_refuses_another_space_and_a_tampered_file(supernet, tmp_path):
    arch = supernet.space.smallest()
    save_subnet(tmp_path / "sub", supernet.space, arch, supernet.extract_subnet(arch))
    other = SPACES["ofa_mbv3_cifar"]
    message = f"belongs to space fingerprint {MNIST.fingerprint()}.*not {other.fingerprint()}"
    with pytest.raises(ValueError, match=message):
        load_subnet(tmp_path / "sub", space=other)
    meta = json.loads((tmp_path / "sub" / "arch.json").read_text())
    meta["space"]["num_classes"] = 11
    (tmp_path / "sub" / "arch.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="its space hashes to .* but the file records"):
        load_subnet(tmp_path / "sub")
    with pytest.raises(FileNotFoundError, match="not a saved sub-network directory"):
        load_subnet(tmp_path / "nothing")


def test_save_refuses_a_model_of_another_arch(supernet, tmp_path):
    small, large = supernet.space.smallest(), supernet.space.largest()
    with pytest.raises(ValueError, match="is sub-network"):
        save_subnet(tmp_path / "sub", supernet.space, small, supernet.extract_subnet(large))
