"""Lightning data module over the named datasets: deterministic split, batch-level augmentation.

Augmentation and normalisation run on whole batches after transfer (cheap tensor ops), with
randomness drawn from a generator seeded by (seed, global step, rank): reproducible, and a
resumed run sees the same augmentation as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ofa.data.datasets import EMBEDDED, KNOWN, load_embedded, load_local
from ofa.errors import check_int
from ofa.seeding import generator

AUGMENT_STREAM = 1  # keeps augmentation randomness apart from the sub-network sampler's


@dataclass(frozen=True)
class Augment:
    """Random translation by up to `shift` pixels (zero padding) and optional horizontal flip."""

    shift: int = 0
    hflip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.shift > 0:
            s = self.shift
            padded = F.pad(x, (s, s, s, s))
            dx, dy = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
            # Gather one shifted window per image with index arithmetic (no Python loop).
            rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * s)
            x = padded.gather(2, rows)
            cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
            x = x.gather(3, cols)
        if self.hflip:
            flip = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        return x


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split keeping class proportions: (train indices, val indices)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction = {val_fraction} is not allowed; it must lie strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_take(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of `n` of `labels`, spread evenly over the classes and deterministic in
    `seed`: every class gives its k-th image (in a seeded order) before any gives its (k+1)-th."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in range(len(classes)):
        idx = np.flatnonzero(inverse == c)
        rank[rng.permutation(idx)] = np.arange(len(idx))
    tiebreak = rng.permutation(len(classes))[inverse]  # which classes give one more image in the last round
    return np.sort(np.lexsort((tiebreak, rank))[:n])


@dataclass(frozen=True)
class DataSpec:
    """What `ImageDataModule` loads and how: the dataset, its split, batches and augmentation."""

    name: str = "mnist5k"
    root: str | None = None  # a local copy (CIFAR, ImageFolder); the embedded datasets need none
    val_fraction: float = 0.2  # share of the dataset held out from training
    test_fraction: float = 0.0  # share of the held-out images kept for the final test (0: none)
    val_limit: int | None = None  # at most this many held-out images (both splits), stratified; None: all
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    mean: Sequence[float] = (0.1307,)
    std: Sequence[float] = (0.3081,)
    shift: int = 0
    hflip: bool = False
    seed: int = 0
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in KNOWN:
            raise ValueError(f"dataset {self.name!r} is not allowed; allowed: {', '.join(KNOWN)}")
        if self.name not in EMBEDDED and not self.root:
            raise ValueError(f"dataset {self.name!r} reads a local copy: set data.root=<path>")
        if self.batch_size < 1:
            raise ValueError(f"batch_size = {self.batch_size} must be at least 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction = {self.test_fraction} is not allowed; allowed: 0 <= test_fraction < 1")
        least = 2 if self.test_fraction > 0 else 1  # one validation image, and one test image when tested
        check_int("val_limit", self.val_limit, least, none_ok=True)


class ImageDataModule(L.LightningDataModule):
    """`ImageDataModule(DataSpec(...))`, or with the spec's fields as keywords (as Hydra's
    `instantiate` calls it from conf/data/)."""

    def __init__(self, spec: DataSpec | None = None, **fields: Any) -> None:
        super().__init__()
        spec = replace(spec, **fields) if spec is not None else DataSpec(**fields)
        self.spec = spec
        self.name, self.root, self.val_fraction = spec.name, spec.root, spec.val_fraction
        self.batch_size, self.eval_batch_size, self.num_workers = (
            spec.batch_size,
            spec.eval_batch_size,
            spec.num_workers,
        )
        self.mean = torch.tensor(list(spec.mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(list(spec.std)).view(1, -1, 1, 1)
        self.augment = Augment(spec.shift, spec.hflip)
        self.seed = spec.seed
        self.image_size = spec.image_size
        self.test_fraction = spec.test_fraction
        self.val_limit = spec.val_limit
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.num_classes: int | None = None

    # --- datasets -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.name in EMBEDDED:
            data = load_embedded(self.name)
            labels = data.labels.numpy()
            train_idx, held_idx = stratified_split(labels, self.val_fraction, self.seed)
            full = TensorDataset(data.images, data.labels)
            self.train_set = Subset(full, train_idx)
            self.num_classes = data.num_classes
        elif self.name == "imagefolder":
            self.train_set = load_local(self.name, self.root, train=True, image_size=self.image_size)
            full = load_local(self.name, self.root, train=False, image_size=self.image_size)
            labels, held_idx = np.asarray(full.targets), np.arange(len(full))
            self.num_classes = len(self.train_set.classes)
        else:
            full = load_local(self.name, self.root, train=True)
            labels = np.asarray(full.targets)
            train_idx, held_idx = stratified_split(labels, self.val_fraction, self.seed)
            self.train_set = Subset(full, train_idx)
            self.num_classes = 10 if self.name == "cifar10" else 100
        val_idx, test_idx = self._split_held_out(labels, held_idx)
        if not len(val_idx):
            raise ValueError(
                f"dataset {self.name!r} leaves no validation images ({len(held_idx)} held out, "
                f"test_fraction = {self.test_fraction}); allowed: more held-out images or a smaller test_fraction"
            )
        self.val_set = Subset(full, val_idx)
        self.test_set = Subset(full, test_idx) if len(test_idx) else None

    def _split_held_out(self, labels: np.ndarray, held_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(validation, test) indices: `test_fraction` of the held-out images, stratified, are
        kept for the final test, so the images that choose an answer are not those that report it.
        The training split does not move with `test_fraction`. With `val_limit`, each split then
        keeps its share of that many images, spread evenly over the classes (the same every run)."""
        if self.test_fraction == 0.0:
            val, test = held_idx, held_idx[:0]
        else:
            keep, test_pos = stratified_split(labels[held_idx], self.test_fraction, self.seed + 1)
            val, test = held_idx[keep], held_idx[test_pos]
        if self.val_limit is None or self.val_limit >= len(held_idx):
            return val, test
        n_test = min(max(1, round(self.val_limit * self.test_fraction)), self.val_limit - 1) if len(test) else 0
        val = val[stratified_take(labels[val], self.val_limit - n_test, self.seed + 2)]
        return val, test[stratified_take(labels[test], n_test, self.seed + 3)]

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        if self.test_set is None:
            raise ValueError(f"dataset {self.name!r} has no test split; allowed: data.test_fraction > 0")
        return self._loader(self.test_set, False, self.eval_batch_size)

    # --- batches --------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and (self.augment.shift or self.augment.hflip):
            g = generator(self.seed, trainer.global_step, trainer.global_rank, AUGMENT_STREAM)
            x = self.augment(x.cpu(), g).to(x.device)
        return self.normalize(x), y

    def calibration_images(self, n: int) -> torch.Tensor:
        """`n` normalised, unaugmented training images (the same every call) for BN recalibration."""
        self.setup()
        n = min(n, len(self.train_set))
        order = np.random.default_rng(self.seed + 1).permutation(len(self.train_set))[:n]
        images = torch.stack([self.train_set[int(i)][0] for i in order])
        return self.normalize(images)
