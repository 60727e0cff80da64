"""Building blocks of the NequIP model (e3nn modules)."""

from .interaction import ConvNetLayer, InteractionBlock
from .message_passing import MESSAGE_BACKENDS, set_message_backend
from .radial import BesselBasis, PolynomialCutoff

__all__ = ["BesselBasis", "PolynomialCutoff", "InteractionBlock", "ConvNetLayer", "MESSAGE_BACKENDS", "set_message_backend"]
