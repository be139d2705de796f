"""Measurement backends and timing utilities."""

from predictors.measure.timing import TimingStats, interleaved_rounds, paired_ratios

__all__ = ["TimingStats", "interleaved_rounds", "paired_ratios"]
