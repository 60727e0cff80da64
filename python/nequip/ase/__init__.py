"""ASE interface: :class:`NequIPCalculator` runs a compiled model (C++ runtime), a package or a
checkpoint (eager model) as an ASE calculator."""

from .calculator import NequIPCalculator

__all__ = ["NequIPCalculator"]
