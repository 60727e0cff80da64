"""Neighbour lists (vesin), with optional pruning by per-edge-type cutoffs."""

from typing import Optional, Tuple

import numpy as np
import vesin


def compute_neighbor_list(
    pos: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    r_max: float,
    atom_types: Optional[np.ndarray] = None,
    per_edge_type_cutoff: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Full neighbour list of every pair closer than ``r_max``, periodic images included.

    Args:
        pos: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows; zeros (or anything) along non-periodic axes.
        pbc: (3,) periodicity per lattice vector.
        r_max: cutoff radius, Å.
        atom_types: (N,) type indices; needed only with ``per_edge_type_cutoff``.
        per_edge_type_cutoff: (T, T) cutoffs, row = centre type, column = neighbour type,
            each at most ``r_max``; edges with ``|r_ij| >= cutoff[type_i, type_j]`` are dropped.

    Returns:
        edge_index: (2, E) int64, row 0 = centre i, row 1 = neighbour j, both directions.
        edge_cell_shift: (E, 3) float64 integer-valued shifts S,
            with ``r_ij = pos[j] - pos[i] + S @ cell``.

    Cells smaller than the cutoff yield every image within ``r_max``, including images of
    an atom itself; an atom is never its own neighbour with a zero shift.
    """
    pos = np.ascontiguousarray(pos, dtype=np.float64).reshape(-1, 3)
    cell = np.ascontiguousarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if pbc.any() and np.linalg.matrix_rank(cell[pbc]) < pbc.sum():
        # vesin would say only "the box matrix is not invertible"
        axes = ", ".join("xyz"[axis] for axis in np.flatnonzero(pbc))
        raise ValueError(
            f"the cell has no volume along its periodic axes ({axes}; cell {cell.tolist()}): "
            "give the cell vectors of the periodic axes, or make those axes non-periodic (pbc=False for a molecule)"
        )

    # vesin (>= 0.4) takes periodicity per axis and ignores the box vector of a non-periodic
    # axis, so slabs and wires need no padding of the cell.
    i, j, shift = vesin.NeighborList(cutoff=float(r_max), full_list=True).compute(
        points=pos, box=cell, periodic=pbc, quantities="ijS"
    )
    edge_index = np.stack([i, j]).astype(np.int64)
    edge_cell_shift = shift.astype(np.float64)

    if per_edge_type_cutoff is not None:
        keep = _within_edge_type_cutoff(
            pos, cell, edge_index, edge_cell_shift, r_max, atom_types, per_edge_type_cutoff
        )
        edge_index, edge_cell_shift = edge_index[:, keep], edge_cell_shift[keep]
    return edge_index, edge_cell_shift


def _within_edge_type_cutoff(
    pos, cell, edge_index, edge_cell_shift, r_max, atom_types, per_edge_type_cutoff
) -> np.ndarray:
    """(E,) bool mask of the edges shorter than the cutoff of their (centre, neighbour) types."""
    if atom_types is None:
        raise ValueError("per_edge_type_cutoff needs atom_types; pass the atoms' type indices")
    cutoff = np.asarray(per_edge_type_cutoff, dtype=np.float64)
    num_types = cutoff.shape[0]
    if cutoff.shape != (num_types, num_types):
        raise ValueError(
            "per_edge_type_cutoff must be a square (num_types, num_types) array, "
            f"got shape {cutoff.shape}"
        )
    if cutoff.max(initial=0.0) > r_max:
        raise ValueError(
            f"per_edge_type_cutoff has a cutoff of {cutoff.max()} above r_max = {r_max}; "
            "raise r_max or lower the cutoff"
        )
    atom_types = np.asarray(atom_types, dtype=np.int64)
    i, j = edge_index
    edge_vec = pos[j] - pos[i] + edge_cell_shift @ cell
    return np.linalg.norm(edge_vec, axis=1) < cutoff[atom_types[i], atom_types[j]]
