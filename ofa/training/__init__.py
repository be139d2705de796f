"""Supernet training with Lightning: schedules, the training module, the ofa-train command."""
