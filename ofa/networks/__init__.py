"""Networks: the elastic supernet and the static sub-networks it extracts.

The supernet is imported lazily so that importing the static network (what deployments
need) never loads `ofa.elastic`.
"""

from typing import Any

from ofa.networks.costs import count_macs, count_params, layer_costs
from ofa.networks.mobilenet_v3 import MobileNetV3

__all__ = ["MobileNetV3", "OFAMobileNetV3", "count_macs", "count_params", "layer_costs"]


def __getattr__(name: str) -> Any:
    if name == "OFAMobileNetV3":
        from ofa.networks.ofa_mbv3 import OFAMobileNetV3

        return OFAMobileNetV3
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
