"""torch's intra-op thread count, changed for a block and restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ofa.errors import check_int


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (None or 0: unchanged), restored afterwards. On a
    shared 2-core machine, 2 threads while another job holds a core are many times slower than 1."""
    check_int("threads", threads, 0, "null, 0 (torch's default) or an integer >= 1", none_ok=True)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
