"""Import the OFA-MobileNetV3 supernets released by mit-han-lab/once-for-all (`.pth` files of the
`ofa_mbv3_d234_e346_k357_w1.0` / `w1.2` family) as our `OFAMobileNetV3`.

The file is read with `torch.load(weights_only=True)`: a file that needs anything but tensors
and plain containers to load is refused, never unpickled. Tensors are matched by name, not by
position, in either of the reference's two namings (the released files use the older one):

    older: blocks.5.mobile_inverted_conv.depth_conv.conv.weight   ….depth_conv.bn.weight
    newer: blocks.5.conv.depth_conv.conv.conv.weight              ….depth_conv.bn.bn.weight

The reference's `blocks.0` is our `first_block` and its `blocks.N` (N >= 1) our `blocks.{N-1}`.
The space is the preset in `REFERENCE_SPACES` whose tensor shapes the file has (the number of
classes read off the classifier); the elastic expand ratios and depths below the largest leave
no trace in the tensors, so a file is taken to be of the released family (e346, d234).
"""

from __future__ import annotations

import hashlib
import pickle  # only for its exception class: nothing here unpickles with it
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ofa.networks import OFAMobileNetV3
from ofa.space import SPACES, MBV3Space

# The reference OFAMobileNetV3 fixes strides, widths before the multiplier and the SE/activation
# layout; the released files differ only in width_mult (and a user's file in n_classes).
REFERENCE_SPACES = ("ofa_mbv3_w10", "ofa_mbv3_w12")

# Our top-level modules and their reference names.
_TOP = (("stem.", "first_conv."), ("final_expand.", "final_expand_layer."), ("feature_mix.", "feature_mix_layer."))
# Inside one MBConv block (ours -> the reference's older naming); transforms before dw_conv.
_BLOCK = (
    ("expand_conv.", "inverted_bottleneck.conv."),
    ("expand_bn.", "inverted_bottleneck.bn."),
    ("dw_conv.transforms.", "depth_conv.conv."),
    ("dw_conv.", "depth_conv.conv."),
    ("dw_bn.", "depth_conv.bn."),
    ("se.", "depth_conv.se.fc."),
    ("project_conv.", "point_linear.conv."),
    ("project_bn.", "point_linear.bn."),
)
_OUR_BLOCK = re.compile(r"(first_block|blocks\.(\d+))\.(.+)")
_NEWER_BLOCK = re.compile(r"^blocks\.(\d+)\.conv\.")
# The newer naming wraps the dynamic layers' own modules once more (DynamicConv2d.conv, DynamicBatchNorm2d.bn).
_NEWER_WRAPPERS = ((".conv.conv.weight", ".conv.weight"), (".bn.bn.", ".bn."), (".linear.linear.", ".linear."))
_SHOWN = 3  # names quoted in an error message, per kind of mismatch


def reference_name(key: str) -> str:
    """The reference's name (older naming, as in the released files) of one of our state-dict keys."""
    for ours, theirs in _TOP:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    if key.startswith("classifier."):
        return key
    match = _OUR_BLOCK.fullmatch(key)
    if match is None:
        raise ValueError(f"{key!r} is not a tensor of OFAMobileNetV3")
    index = 0 if match[1] == "first_block" else int(match[2]) + 1
    rest = match[3]
    for ours, theirs in _BLOCK:
        if rest.startswith(ours):
            rest = theirs + rest[len(ours) :] + ("_matrix" if ours == "dw_conv.transforms." else "")
            return f"blocks.{index}.mobile_inverted_conv.{rest}"
    raise ValueError(f"{key!r} is not a tensor of OFAMobileNetV3")


def canonical_name(key: str) -> str:
    """A reference key in either naming, written in the older one."""
    key = _NEWER_BLOCK.sub(lambda m: f"blocks.{m[1]}.mobile_inverted_conv.", key)
    for newer, older in _NEWER_WRAPPERS:
        key = key.replace(newer, older)
    return key


def export_ofa_state_dict(supernet: OFAMobileNetV3) -> dict[str, Tensor]:
    """Our supernet's tensors under the reference's (older) names: what a released file holds."""
    return {reference_name(k): v.detach().clone() for k, v in supernet.state_dict().items()}


def read_ofa_state_dict(src: str | Path) -> dict[str, Tensor]:
    """The tensors of a reference checkpoint (`{"state_dict": {...}}` or a bare state dict),
    loaded without unpickling anything but tensors and plain containers."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"OFA checkpoint {src} does not exist")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"a pickled {found[1]}" if found else "pickled objects"
        raise ValueError(f"{src.name} holds {what}, not only tensors; refusing to unpickle it") from None
    except Exception as exc:  # a truncated or foreign file: torch raises RuntimeError, EOFError, KeyError...
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch's advice follows
        raise ValueError(f"{src.name} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # the released files; OFA's training checkpoints add epoch, optimizer...
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{src.name} holds a {type(obj).__name__}, not a state dict or {{'state_dict': ...}}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{src.name}: {len(bad)} entries are not named tensors (first: {', '.join(bad[:_SHOWN])})")
    return dict(obj)


def _renamed(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """`state` under the older names; a tensor given under both namings is refused."""
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in state.items():
        name = canonical_name(key)
        if name in out:
            raise ValueError(f"{source}: {origin[name]!r} and {key!r} name the same tensor ({name})")
        out[name], origin[name] = tensor, key
    return out


def _mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> tuple[int, str]:
    """(number of problems, a one-line account) of `found` against the tensors `expected`."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shaped = [
        f"{k} {tuple(found[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    parts = [
        f"{len(items)} {kind} ({', '.join(items[:_SHOWN])}{', ...' if len(items) > _SHOWN else ''})"
        for kind, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shaped))
        if items
    ]
    return len(missing) + len(unexpected) + len(shaped), "; ".join(parts)


def _candidates(state: Mapping[str, Tensor]) -> list[MBV3Space]:
    """The reference spaces, with the number of classes the classifier holds."""
    classifier = state.get("classifier.linear.weight")
    spaces = []
    for name in REFERENCE_SPACES:
        space = SPACES[name]
        if classifier is not None and classifier.dim() == 2 and classifier.shape[0] != space.num_classes:
            n = int(classifier.shape[0])
            space = space.with_(num_classes=n, name=f"{name}_{n}classes")
        spaces.append(space)
    return spaces


def supernet_from_state_dict(state: Mapping[str, Tensor], source: str = "state dict") -> OFAMobileNetV3:
    """Our supernet holding the reference tensors `state` (either naming), each used exactly once,
    in the reference space whose shapes they have; anything else is refused in one line."""
    found = _renamed(state, source)
    closest: tuple[int, str, str] | None = None
    for space in _candidates(found):
        supernet = OFAMobileNetV3(space=space)
        ours = supernet.state_dict()
        expected = {reference_name(k): v for k, v in ours.items()}
        problems, account = _mismatch(expected, found)
        if problems == 0:
            supernet.load_state_dict({k: found[reference_name(k)] for k in ours})
            return supernet.eval()
        if closest is None or problems < closest[0]:
            closest = (problems, space.name, account)
    assert closest is not None
    _, name, account = closest
    raise ValueError(f"{source} is not an OFA-MobileNetV3 supernet of a known space (closest {name}: {account})")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_ofa_checkpoint(src: str | Path) -> tuple[OFAMobileNetV3, dict[str, Any]]:
    """A released OFA-MobileNetV3 checkpoint as our supernet (eval mode) and what to record about
    it: the source file's name and sha256, the space's name, the number of tensors."""
    src = Path(src)
    state = read_ofa_state_dict(src)
    supernet = supernet_from_state_dict(state, src.name)
    info = {
        "source": src.name,
        "sha256": file_sha256(src),
        "space": supernet.space.name,
        "tensors": len(state),
    }
    return supernet, info
