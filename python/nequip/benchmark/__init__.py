"""The benchmark model and systems of DESIGN.md, shared by every speed measurement."""

from .systems import BENCHMARK_MODEL_CONFIG, SIZES, benchmark_model, machine_description, sic_supercell, system_for

__all__ = ["BENCHMARK_MODEL_CONFIG", "SIZES", "benchmark_model", "machine_description", "sic_supercell", "system_for"]
