"""The importer of OFA's released OFA-MobileNetV3 supernets (ofa.importer, ofa-import).

The reference numbers come from ../shared/data/ofa_reference/ (see its README): a checkpoint in
the released files' layout with random weights, and the reference implementation's logits for
six sub-networks, with the supernet and with the extracted static sub-network.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ofa.checkpoint import load_supernet
from ofa.importer import (
    canonical_name,
    export_ofa_state_dict,
    import_ofa_checkpoint,
    read_ofa_state_dict,
    reference_name,
)
from ofa.networks import OFAMobileNetV3
from ofa.space import SPACES
from tests.conftest import REPO_ROOT, SHARED_DATA, randomize_

FIXTURE = SHARED_DATA / "ofa_reference" / "ofa_mbv3_w10_random.pth"
EXPECTED = SHARED_DATA / "ofa_reference" / "ofa_mbv3_w10_expected"
TOLERANCE = 1e-4  # the reference agrees with itself to ~1e-7


@pytest.fixture(scope="module")
def reference() -> dict:
    """The fixture's tensors (older naming), the reference outputs and the six sub-networks."""
    if not FIXTURE.is_file():
        pytest.skip(f"reference checkpoint not found at {FIXTURE}")
    state = torch.load(FIXTURE, map_location="cpu", weights_only=True)["state_dict"]
    archs = json.loads(EXPECTED.with_suffix(".json").read_text())["archs"]
    return {"state": state, "expected": load_file(str(EXPECTED.with_suffix(".safetensors"))), "archs": archs}


@pytest.fixture(scope="module")
def imported(reference) -> tuple[OFAMobileNetV3, dict]:
    return import_ofa_checkpoint(FIXTURE)


def newer_name(key: str) -> str:
    """The reference's newer naming of an older key: `.conv.` for `.mobile_inverted_conv.`, and
    in the elastic blocks (N >= 1) the dynamic layers' inner `conv` / `bn` one level deeper."""
    if not key.startswith("blocks."):
        return key
    index, rest = key.split(".")[1], key.split(".mobile_inverted_conv.")[1]
    if index != "0":
        rest = rest.replace(".conv.weight", ".conv.conv.weight").replace(".bn.", ".bn.bn.")
    return f"blocks.{index}.conv.{rest}"


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@torch.no_grad()
def logits(supernet: OFAMobileNetV3, arch, x: torch.Tensor) -> torch.Tensor:
    supernet.set_active_subnet(arch)
    return supernet.eval()(x)


def assert_same_tensors(a: OFAMobileNetV3, b: OFAMobileNetV3) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]


def save(tmp_path: Path, obj, name: str = "ckpt.pth") -> Path:
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def refused(src: Path) -> str:
    """The one-line ValueError the importer raises for `src`."""
    with pytest.raises(ValueError) as err:
        import_ofa_checkpoint(src)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- the shipped fixture ------------------------------------------------------------------
def test_the_fixture_loads_with_weights_only(reference):
    assert reference["state"] and all(isinstance(v, torch.Tensor) for v in reference["state"].values())
    assert read_ofa_state_dict(FIXTURE).keys() == reference["state"].keys()


@torch.no_grad()
def test_imported_supernet_and_static_subnets_match_the_reference(reference, imported):
    supernet, info = imported
    expected = reference["expected"]
    assert not supernet.training
    assert info["space"] == "ofa_mbv3_w10" and supernet.space == SPACES["ofa_mbv3_w10"]
    assert info["source"] == FIXTURE.name and info["tensors"] == len(reference["state"])
    assert info["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    for i, arch in enumerate(reference["archs"]):
        x = expected[f"x_{i}"]
        arch = supernet.set_active_subnet(arch)
        assert arch.r == x.shape[-1]
        assert max_diff(supernet(x), expected[f"logits_{i}"]) <= TOLERANCE, i
        static = supernet.extract_subnet(arch).eval()
        assert max_diff(static(x), expected[f"static_{i}"]) <= TOLERANCE, i


def test_tensors_are_placed_by_name(reference, imported):
    """Hand-written pairs (the reference's blocks.0 is our first_block, its blocks.N our
    blocks.N-1), then every tensor: exporting the import gives the file back exactly."""
    ours = imported[0].state_dict()
    pairs = {
        "first_conv.conv.weight": "stem.conv.weight",
        "blocks.0.mobile_inverted_conv.depth_conv.bn.running_var": "first_block.dw_bn.running_var",
        "blocks.0.mobile_inverted_conv.point_linear.conv.weight": "first_block.project_conv.weight",
        "blocks.1.mobile_inverted_conv.inverted_bottleneck.conv.weight": "blocks.0.expand_conv.weight",
        "blocks.2.mobile_inverted_conv.inverted_bottleneck.bn.weight": "blocks.1.expand_bn.weight",
        "blocks.2.mobile_inverted_conv.depth_conv.conv.weight": "blocks.1.dw_conv.weight",
        "blocks.2.mobile_inverted_conv.depth_conv.bn.bias": "blocks.1.dw_bn.bias",
        "blocks.5.mobile_inverted_conv.depth_conv.se.fc.reduce.weight": "blocks.4.se.reduce.weight",
        "blocks.5.mobile_inverted_conv.depth_conv.conv.7to5_matrix": "blocks.4.dw_conv.transforms.7to5",
        "blocks.5.mobile_inverted_conv.depth_conv.conv.5to3_matrix": "blocks.4.dw_conv.transforms.5to3",
        "blocks.5.mobile_inverted_conv.depth_conv.se.fc.expand.bias": "blocks.4.se.expand.bias",
        "blocks.20.mobile_inverted_conv.point_linear.bn.bias": "blocks.19.project_bn.bias",
        "final_expand_layer.bn.running_mean": "final_expand.bn.running_mean",
        "feature_mix_layer.conv.weight": "feature_mix.conv.weight",
        "classifier.linear.bias": "classifier.linear.bias",
    }
    for theirs, mine in pairs.items():
        assert reference_name(mine) == theirs
        assert torch.equal(ours[mine], reference["state"][theirs]), mine
    exported = export_ofa_state_dict(imported[0])
    assert exported.keys() == reference["state"].keys()
    assert all(torch.equal(exported[k], v) for k, v in reference["state"].items())


# --- variants of the fixture --------------------------------------------------------------
def test_newer_naming_bare_dicts_and_any_order_give_the_same_supernet(reference, imported, tmp_path):
    state = reference["state"]
    newer = {newer_name(k): v for k, v in state.items()}
    assert "blocks.5.conv.depth_conv.conv.conv.weight" in newer and "blocks.5.conv.depth_conv.bn.bn.bias" in newer
    assert all(canonical_name(k) in state for k in newer)
    variants = {
        "newer.pth": {"state_dict": newer},
        "bare.pth": dict(state),
        "reversed.pth": {"state_dict": dict(reversed(list(state.items())))},
        "training.pth": {"epoch": 3, "best_acc": 0.5, "state_dict": newer},  # OFA's own run checkpoints
    }
    for name, obj in variants.items():
        supernet, info = import_ofa_checkpoint(save(tmp_path, obj, name))
        assert info["space"] == "ofa_mbv3_w10", name
        assert_same_tensors(supernet, imported[0])
    x, arch = reference["expected"]["x_1"], reference["archs"][1]  # the smallest, at 128 px
    assert max_diff(logits(supernet, arch, x), reference["expected"]["logits_1"]) <= TOLERANCE


def test_another_number_of_classes_builds_that_space(reference, tmp_path):
    state = dict(reference["state"])
    state["classifier.linear.weight"] = state["classifier.linear.weight"][:10].clone()
    state["classifier.linear.bias"] = state["classifier.linear.bias"][:10].clone()
    supernet, info = import_ofa_checkpoint(save(tmp_path, {"state_dict": state}))
    assert supernet.space == SPACES["ofa_mbv3_w10"].with_(num_classes=10)
    assert info["space"] == "ofa_mbv3_w10_10classes"
    assert torch.equal(supernet.classifier.linear.weight, state["classifier.linear.weight"])


def test_width_1_2_round_trips_through_the_released_layout(tmp_path):
    """No w1.2 file is shipped: our w1.2 supernet in the reference's older naming imports as the
    w1.2 space with every tensor and the logits unchanged."""
    torch.manual_seed(0)
    source = randomize_(OFAMobileNetV3(space=SPACES["ofa_mbv3_w12"]), seed=1).eval()
    src = save(tmp_path, {"state_dict": export_ofa_state_dict(source)}, "ofa_mbv3_w12.pth")
    supernet, info = import_ofa_checkpoint(src)
    assert info["space"] == "ofa_mbv3_w12" and supernet.space == SPACES["ofa_mbv3_w12"]
    assert_same_tensors(supernet, source)
    arch = source.space.sample(torch.Generator().manual_seed(2), r=128)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    assert torch.equal(logits(supernet, arch, x), logits(source, arch, x))


def test_a_tensor_of_another_width_is_refused(reference, tmp_path):
    state = dict(reference["state"])
    key = "blocks.3.mobile_inverted_conv.depth_conv.conv.weight"
    state[key] = torch.zeros(152, 1, 7, 7)  # the w1.0 block holds 144 middle channels
    msg = refused(save(tmp_path, {"state_dict": state}))
    assert "1 of another shape" in msg and key in msg and "(152, 1, 7, 7)" in msg and "(144, 1, 7, 7)" in msg
    assert "closest ofa_mbv3_w10" in msg


def test_missing_extra_and_doubly_named_tensors_are_refused(reference, tmp_path):
    state = reference["state"]
    key = "blocks.7.mobile_inverted_conv.depth_conv.se.fc.reduce.bias"
    missing = {k: v for k, v in state.items() if k != key}
    msg = refused(save(tmp_path, {"state_dict": missing}, "missing.pth"))
    assert "1 missing" in msg and key in msg and "unexpected" not in msg
    extra = {**state, "blocks.21.mobile_inverted_conv.point_linear.conv.weight": torch.zeros(160, 960, 1, 1)}
    msg = refused(save(tmp_path, extra, "extra.pth"))
    assert "1 unexpected" in msg and "blocks.21." in msg and "missing" not in msg
    both = {**state, newer_name("blocks.3.mobile_inverted_conv.depth_conv.bn.bias"): torch.zeros(144)}
    msg = refused(save(tmp_path, both, "both.pth"))
    assert "blocks.3.conv.depth_conv.bn.bn.bias" in msg and "same tensor" in msg
    shallower = {k: v for k, v in state.items() if not k.startswith(("blocks.4.", "blocks.8."))}  # depth 3 in 2 stages
    msg = refused(save(tmp_path, shallower, "d3.pth"))
    assert "missing" in msg and "blocks.4.mobile_inverted_conv" in msg


def test_other_ofa_families_are_refused(tmp_path):
    """A ResNet-like file (other names) and a ProxylessNAS-like one (the same names, no SE, no
    final expand layer, other widths): one line naming the counts and the first names."""
    resnet = {"input_stem.0.conv.weight": torch.zeros(32, 3, 3, 3), "classifier.linear.weight": torch.zeros(1000, 2048)}
    msg = refused(save(tmp_path, {"state_dict": resnet}, "resnet.pth"))
    assert "not an OFA-MobileNetV3 supernet" in msg and "1 unexpected (input_stem.0.conv.weight)" in msg
    assert "missing" in msg and "first_conv.conv.weight" in msg
    proxyless = {
        "first_conv.conv.weight": torch.zeros(40, 3, 3, 3),
        "blocks.0.mobile_inverted_conv.depth_conv.conv.weight": torch.zeros(40, 1, 3, 3),
        "feature_mix_layer.conv.weight": torch.zeros(1664, 416, 1, 1),
        "classifier.linear.weight": torch.zeros(1000, 1664),
    }
    msg = refused(save(tmp_path, proxyless, "proxyless.pth"))
    assert "of another shape" in msg and "first_conv.conv.weight (40, 3, 3, 3)" in msg


class _Tripwire:
    """Unpickling it would call `_tripped`: the importer must refuse the file before that."""

    calls: list[str] = []

    def __reduce__(self):
        return (_tripped, ("unpickled",))


def _tripped(tag: str) -> str:
    _Tripwire.calls.append(tag)
    return tag


class _StateDict(collections.OrderedDict):
    pass


def test_pickled_objects_are_refused_without_unpickling(reference, tmp_path):
    trap = save(tmp_path, {"state_dict": {"first_conv.conv.weight": torch.zeros(1)}, "meta": _Tripwire()}, "trap.pth")
    msg = refused(trap)
    assert msg.startswith("trap.pth holds a pickled") and "_tripped" in msg and "refusing to unpickle" in msg
    assert _Tripwire.calls == []
    subclass = _StateDict(reference["state"])
    assert "_StateDict" in refused(save(tmp_path, subclass, "subclass.pth"))
    with_text = save(tmp_path, {**reference["state"], "note": "hi"}, "str.pth")
    assert "1 entries are not named tensors (first: note)" in refused(with_text)
    (tmp_path / "cut.pth").write_bytes(FIXTURE.read_bytes()[:100_000])
    assert refused(tmp_path / "cut.pth").startswith("cut.pth is not a readable PyTorch checkpoint")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_ofa_checkpoint(tmp_path / "absent.pth")


# --- the command ---------------------------------------------------------------------------
def ofa_import(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "app.import_ofa", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_ofa_import_writes_a_supernet_file(reference, tmp_path):
    done = ofa_import(tmp_path, f"src={FIXTURE}", f"out={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "ofa_mbv3_w10" in lines[0] and "475 tensors" in lines[0], done.stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["supernet.safetensors"]
    supernet, meta = load_supernet(tmp_path / "out" / "supernet.safetensors", SPACES["ofa_mbv3_w10"])
    info = meta["info"]
    assert info["imported"] == "mit-han-lab/once-for-all" and info["source"] == FIXTURE.name
    assert info["data"] == "imagenet" and info["space"] == "ofa_mbv3_w10" and len(info["sha256"]) == 64
    x, arch = reference["expected"]["x_1"], reference["archs"][1]
    assert max_diff(logits(supernet, arch, x), reference["expected"]["logits_1"]) <= TOLERANCE


def test_ofa_import_refuses_bad_input_in_one_line(tmp_path):
    src = save(tmp_path, {"state_dict": {}, "meta": _Tripwire()}, "trap.pth")
    done = ofa_import(tmp_path, f"src={src}", f"out={tmp_path / 'out'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ValueError: trap.pth holds a pickled"), done.stderr
    assert not (tmp_path / "out" / "supernet.safetensors").exists()
