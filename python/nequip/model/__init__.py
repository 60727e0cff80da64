"""The NequIP model and its construction from a configuration."""

from .builder import build_model
from .nequip_model import NequIPModel

__all__ = ["NequIPModel", "build_model"]
