"""The data module's splits on the embedded datasets: train / validation / test."""

from __future__ import annotations

import numpy as np
import pytest

from ofa.data.datamodule import ImageDataModule


def indices(dm: ImageDataModule, split: str) -> set[int]:
    return set(int(i) for i in getattr(dm, f"{split}_set").indices)


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_the_test_split_is_carved_from_the_held_out_images_only(name):
    plain = ImageDataModule(name=name, val_fraction=0.2, seed=3)
    split = ImageDataModule(name=name, val_fraction=0.2, test_fraction=0.5, seed=3)
    plain.setup(), split.setup()
    assert plain.test_set is None
    # Training images do not move: a supernet trained before a test split existed keeps its test clean.
    assert indices(split, "train") == indices(plain, "train")
    val, test = indices(split, "val"), indices(split, "test")
    assert not val & test and val | test == indices(plain, "val")
    assert abs(len(test) - len(val)) <= 10  # one image per class at most
    labels = split.test_set.dataset.tensors[1][sorted(test)].numpy()
    assert len(np.unique(labels)) == split.num_classes  # stratified: every class is in the test split
    x, y = next(iter(split.test_dataloader()))
    assert x.shape[0] == y.shape[0] > 0


def test_a_missing_test_split_and_a_bad_fraction_are_one_clear_error():
    dm = ImageDataModule(name="digits")
    with pytest.raises(ValueError, match="has no test split; allowed: data.test_fraction > 0"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match=r"test_fraction = 1.0 is not allowed; allowed: 0 <= test_fraction < 1"):
        ImageDataModule(name="digits", test_fraction=1.0)
