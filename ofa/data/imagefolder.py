"""Image folders read with Pillow alone (no torchvision): `<root>/train/<class>/*.jpg` and
`<root>/val/<class>/*.jpg`, ImageNet's layout.

Classes are the sorted sub-folder names of `train/` (for ImageNet's synset folders, the label
order of every released ImageNet model); `val/` uses the same indices, so a `val/` holding only
some classes keeps the labels right. Only paths are kept in memory: each image is read, resized
and cropped when it is asked for. Preprocessing is OFA's for evaluation: the shorter side resized
to ceil(size / 0.875) (bilinear), the centre `size` x `size` cropped, scaled to [0, 1] (CHW float).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROP_FRACTION = 0.875  # OFA's (and the usual ImageNet) evaluation crop: 224 of 256


def class_names(split: Path) -> list[str]:
    """The sorted sub-folder names of `split` (one per class); a missing or empty split is one line."""
    if not split.is_dir():
        raise FileNotFoundError(f"imagefolder expects {split} with one sub-folder per class (<class>/<image>.jpg)")
    with os.scandir(split) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"{split} has no class sub-folders; imagefolder expects {split}/<class>/<image>.jpg")
    return names


def _images_in(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(EXTENSIONS))


def eval_transform(image, size: int) -> torch.Tensor:
    """OFA's evaluation preprocessing of a PIL image, as torchvision's Resize(ceil(size / 0.875)),
    CenterCrop(size), ToTensor() compute it: a (3, size, size) float tensor in [0, 1]."""
    from PIL import Image

    image = image.convert("RGB")
    short = math.ceil(size / CROP_FRACTION)
    w, h = image.size
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageFolder(Dataset):
    """`(image, label)` pairs of one split folder, read lazily; `classes` and `targets` as in
    torchvision's ImageFolder (the data module's stratified splits read `targets`)."""

    def __init__(self, split: str | Path, image_size: int = 224, classes: Sequence[str] | None = None) -> None:
        split = Path(split)
        self.root = split
        self.image_size = int(image_size)
        self.classes = list(classes) if classes is not None else class_names(split)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        present = class_names(split)
        foreign = [c for c in present if c not in self.class_to_idx]
        if foreign:
            raise ValueError(
                f"{split} has class folders that train/ lacks ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); every class needs a train/ folder of the same name"
            )
        self.samples: list[tuple[str, int]] = []
        for name in present:
            files = _images_in(split / name)
            if not files:
                raise ValueError(f"{split / name} holds no images ({', '.join(EXTENSIONS)})")
            self.samples += [(str(split / name / f), self.class_to_idx[name]) for f in files]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return eval_transform(image, self.image_size), label
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None


def load_image_folder(root: str | Path, train: bool, image_size: int | None = None) -> ImageFolder:
    """`<root>/train` or `<root>/val` (classes from `<root>/train` for both)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder (imagefolder expects {root}/train and {root}/val)")
    classes = class_names(root / "train")
    return ImageFolder(root / ("train" if train else "val"), image_size or 224, classes)
