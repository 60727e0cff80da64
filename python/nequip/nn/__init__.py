"""Building blocks of the NequIP model (e3nn modules)."""

from .interaction import ConvNetLayer, InteractionBlock
from .radial import BesselBasis, PolynomialCutoff

__all__ = ["BesselBasis", "PolynomialCutoff", "InteractionBlock", "ConvNetLayer"]
