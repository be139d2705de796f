"""Elastic (dynamic) layers of the supernet. Nothing here is used by extracted sub-networks."""

from ofa.elastic.mbconv import DynamicMBConv
from ofa.elastic.ops import (
    DynamicBatchNorm2d,
    DynamicDepthwiseConv2d,
    DynamicPointwiseConv2d,
    DynamicSqueezeExcite,
)

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicDepthwiseConv2d",
    "DynamicMBConv",
    "DynamicPointwiseConv2d",
    "DynamicSqueezeExcite",
]
