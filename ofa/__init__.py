"""ofa-hwnas core: search space, elastic supernet, static sub-networks (and, later, training)."""

from ofa.space import SPACES, ArchConfig, MBV3Space, get_space

__all__ = ["SPACES", "ArchConfig", "MBV3Space", "get_space"]
