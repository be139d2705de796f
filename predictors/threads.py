"""The one place predictors change torch's intra-op thread count: for a block, restored after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (None or 0: unchanged), restored afterwards. On a shared
    2-core machine, 2 threads while another job holds a core are 20-50x slower than 1."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
