"""Global seeds set for the length of a job and restored afterwards (the pipeline runs several
jobs in one process; none may inherit another's random state)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Lightning's `seed_everything(seed, workers=True)` inside the block; Python's, NumPy's and
    torch's generators and Lightning's seed variables are put back when it ends."""
    py_state, np_state = random.getstate(), np.random.get_state()
    env = {k: os.environ.get(k) for k in _SEED_ENV}
    with torch.random.fork_rng(devices=[]):
        L.seed_everything(seed, workers=True, verbose=False)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
