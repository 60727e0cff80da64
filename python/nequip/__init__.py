"""NequIP: E(3)-equivariant interatomic potentials, from training to molecular dynamics."""

__version__ = "0.1.0"
