"""Data layer: structures read by ASE -> atomic data dictionaries with vesin neighbor lists."""

from . import keys, statistics
from .atomic_data import AtomicData, TypeMapper, batch_frames, from_ase
from .dataset import AtomicDataset, ase_format_problem, read_frames
from .neighbors import DenseCellWarning, WarnOnceAboutDenseCells, compute_neighbor_list
from .synthetic import synthetic_frame

__all__ = [
    "keys",
    "statistics",
    "AtomicData",
    "AtomicDataset",
    "DenseCellWarning",
    "ase_format_problem",
    "TypeMapper",
    "WarnOnceAboutDenseCells",
    "batch_frames",
    "compute_neighbor_list",
    "from_ase",
    "read_frames",
    "synthetic_frame",
]
