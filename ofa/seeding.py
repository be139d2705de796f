"""Derived seeds: one explicit generator per purpose, seeded from (base seed, step, ...)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers; the same parts give the same seed everywhere."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
