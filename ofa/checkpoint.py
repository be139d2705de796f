"""The trained supernet as one self-describing safetensors file (no pickle).

The header's metadata carries the space (so the file rebuilds its own network), the space
fingerprint, and free-form JSON (schedule, final metrics). Loading against an expected space
with another fingerprint is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, safe_open, save

from ofa.errors import UserError
from ofa.io import atomic_write_bytes, reading
from ofa.networks import OFAMobileNetV3
from ofa.space import MBV3Space

FORMAT = "ofa-hwnas-supernet/1"


def save_supernet(path: str | Path, supernet: OFAMobileNetV3, info: dict[str, Any] | None = None) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in supernet.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "space": json.dumps(supernet.space.to_dict()),
        "space_fingerprint": supernet.space.fingerprint(),
        "dropout": str(supernet.dropout),
        "info": json.dumps(info or {}),
    }
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_supernet_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {path} does not exist")
    with reading(path, "supernet file (safetensors)"):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not an ofa-hwnas supernet file (format {meta.get('format')!r}, expected {FORMAT})"
            )
        return {
            "space": MBV3Space.from_dict(json.loads(meta["space"])),
            "space_fingerprint": meta["space_fingerprint"],
            "dropout": float(meta["dropout"]),
            "info": json.loads(meta["info"]),
        }


def load_supernet(path: str | Path, space: MBV3Space | None = None) -> tuple[OFAMobileNetV3, dict[str, Any]]:
    """The supernet stored at `path` and its metadata; refuses a file of another space than `space`."""
    meta = read_supernet_metadata(path)
    if space is not None and meta["space_fingerprint"] != space.fingerprint():
        raise ValueError(
            f"{path} holds a supernet of space {meta['space_fingerprint']}, "
            f"expected {space.fingerprint()} ({space.name})"
        )
    supernet = OFAMobileNetV3(space=meta["space"], dropout=meta["dropout"])
    with reading(path, "supernet file (safetensors)"):
        state = load_file(str(path))
    try:
        supernet.load_state_dict(state)
    except RuntimeError as exc:  # tensors that do not fit the space its own header names
        first = str(exc).splitlines()[0]
        raise UserError(f"{path} does not hold the supernet its header describes ({first})") from None
    return supernet.eval(), meta


def resolve_checkpoint(path: str | Path) -> Path:
    """A supernet file, or a training run folder holding `supernet.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / "supernet.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no supernet checkpoint at {path} (run ofa-train first, or pass checkpoint=<file>)")
    return path


# Datasets recorded by a supernet file that a data config of another name reads: OFA's released
# supernets say "imagenet"; ImageNet is given to us as an image folder.
READERS = {"imagenet": ("imagefolder",)}


def check_trained_on(meta: dict[str, Any], data_name: str, allow_other: bool = False) -> str | None:
    """The dataset a supernet file says it was trained on (None: not recorded, e.g. an imported
    one); refuses another `data_name` in one line unless `allow_other` (the report records it)."""
    trained = (meta.get("info") or {}).get("data")
    if trained and data_name not in (trained, *READERS.get(trained, ())) and not allow_other:
        raise UserError(
            f"data = {data_name!r} is not the dataset this supernet was trained on ({trained!r}); set "
            f"data={trained}, or allow_other_data=true to evaluate it there anyway (recorded in the report)"
        )
    return trained
