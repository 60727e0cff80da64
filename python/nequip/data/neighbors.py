"""Neighbor lists (vesin), with optional pruning by per-edge-type cutoffs."""

import math
import warnings
from typing import Callable, Optional, Tuple

import numpy as np
import vesin

# Atoms per Å³ above which a periodic structure is refused before its list is built: atoms
# 0.1 Å apart on average (density^-1/3), seven times closer than the shortest bond there is
# (H2, 0.74 Å). No real structure comes near; a cell in the wrong units does: a 7.4 Å cell read
# 100 times too small has 8·10^4 atoms/Å³, and 3·10^7 neighbors per atom at r_max = 4.5 Å
# (a list that outgrew 24 GB); at 10^-6 of its size vesin would loop over some 10^18 images.
MAX_ATOMS_PER_A3 = 1000.0
# A list is built with a warning above both of these: atoms 1 Å apart on average, five times
# denser than diamond (0.18 atoms/Å³, the densest solid at ambient pressure), and more neighbors
# per atom than diamond has within 5 Å (92). Mostly a cell 3-20 times too short; possible for
# hydrogen at terapascals, so not refused. The second bound spares frames made in units of a
# small r_max (the synthetic frame traced for AOTInductor: 4.6 atoms/Å³, 19 neighbors at 1 Å).
DENSE_ATOMS_PER_A3 = 1.0
CROWDED_NEIGHBORS_PER_ATOM = 100.0
_UNITS_ADVICE = (
    "check the cell's units (Å; not nm, not units of the lattice constant, not fractional "
    "coordinates read as Å) and that it is the cell of these positions"
)


class DenseCellWarning(UserWarning):
    """A periodic cell denser than any real structure: most likely a cell in the wrong units."""


class WarnOnceAboutDenseCells:
    """An ``on_dense_cell`` for a caller that evaluates a changing cell step after step (the ASE
    calculator, the TorchSim model): one DenseCellWarning per caller, since under NPT the cell,
    and with it the message, changes every step (Python's once-per-message filter would repeat it)."""

    def __init__(self):
        self.warned = False

    def __call__(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(message, DenseCellWarning, stacklevel=3)  # at the caller of compute_neighbor_list


def compute_neighbor_list(
    pos: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    r_max: float,
    atom_types: Optional[np.ndarray] = None,
    per_edge_type_cutoff: Optional[np.ndarray] = None,
    on_dense_cell: Optional[Callable[[str], None]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Full neighbor list of every pair closer than ``r_max``, periodic images included.

    Args:
        pos: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows; zeros (or anything) along non-periodic axes.
        pbc: (3,) periodicity per lattice vector.
        r_max: cutoff radius, Å.
        atom_types: (N,) type indices; needed only with ``per_edge_type_cutoff``.
        per_edge_type_cutoff: (T, T) cutoffs, row = center type, column = neighbor type,
            each at most ``r_max``; edges with ``|r_ij| >= cutoff[type_i, type_j]`` are dropped.

    Returns:
        edge_index: (2, E) int64, row 0 = center i, row 1 = neighbor j, both directions.
        edge_cell_shift: (E, 3) float64 integer-valued shifts S,
            with ``r_ij = pos[j] - pos[i] + S @ cell``.
        on_dense_cell: called with the message about a cell too dense to be real (below);
            None: a DenseCellWarning (once per message, Python's default filter).

    Cells smaller than the cutoff yield every image within ``r_max``, including images of
    an atom itself; an atom is never its own neighbor with a zero shift.

    A periodic structure denser than ``MAX_ATOMS_PER_A3`` (a cell in the wrong units) is
    refused with a ValueError before the list is built; one denser than ``DENSE_ATOMS_PER_A3``
    with more than ``CROWDED_NEIGHBORS_PER_ATOM`` neighbors per atom is reported through
    ``on_dense_cell`` and its list built.
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
    message = _check_atoms_per_volume(pos, cell, pbc, r_max)
    if message is not None:
        if on_dense_cell is None:
            warnings.warn(message, DenseCellWarning, stacklevel=2)
        else:
            on_dense_cell(message)

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
    """(E,) bool mask of the edges shorter than the cutoff of their (center, neighbor) types."""
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


def _check_atoms_per_volume(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float) -> Optional[str]:
    """Refuse a periodic structure too dense to be real before vesin builds its list; the
    warning for one merely denser than any solid, or None.

    The list holds about ``N · density · (4/3)π r_max³`` edges: periodic images of a cell
    smaller than ``r_max`` are part of the same density, so the estimate covers them too.
    """
    if not pbc.any() or len(pos) == 0:
        return None  # no images: at most N (N - 1) edges, set by the positions alone
    periodic = cell[pbc]
    num_periodic = len(periodic)
    # length, area or volume of the periodic lattice
    covolume = math.sqrt(abs(np.linalg.det(periodic @ periodic.T)))
    # Across a non-periodic axis the atoms occupy their positions' extent, counted as at least
    # 4/3 r_max: a layer's neighbors lie in a disc, σ π r², which is what the density
    # σ / (4/3 r) gives in a ball of (4/3) π r³ (for a chain's line, 2 r λ, within 20%).
    across = np.linalg.svd(periodic)[2][num_periodic:]
    extent = np.ptp(pos @ across.T, axis=0)  # (3 - num_periodic,)
    volume = covolume * float(np.prod(np.maximum(extent, 4.0 / 3.0 * r_max)))
    density = len(pos) / volume
    neighbors = density * 4.0 / 3.0 * math.pi * r_max**3
    if density <= MAX_ATOMS_PER_A3 and (
        density <= DENSE_ATOMS_PER_A3 or neighbors <= CROWDED_NEIGHBORS_PER_ATOM
    ):
        return None

    lengths = ", ".join(f"{length:.3g}" for length in np.linalg.norm(periodic, axis=1))
    axes = ", ".join("xyz"[axis] for axis in np.flatnonzero(pbc))
    across_extent = volume / covolume
    if num_periodic == 3:
        cell_text = f"cell lengths {lengths} Å (volume {volume:.3g} Å³)"
    elif num_periodic == 2:
        cell_text = (
            f"cell lengths {lengths} Å along the periodic axes {axes} ({covolume:.3g} Å² in a "
            f"layer counted {across_extent:.3g} Å thick: the atoms' extent, at least 4/3 r_max)"
        )
    else:
        cell_text = (
            f"cell length {lengths} Å along the periodic axis {axes} (in a column counted "
            f"{across_extent:.3g} Å² across: the atoms' extent, at least 4/3 r_max each way)"
        )
    spacing = density ** (-1.0 / 3.0)
    if density > MAX_ATOMS_PER_A3:
        raise ValueError(
            f"the periodic cell is far too small for its {len(pos)} atoms: {cell_text} give "
            f"{density:.3g} atoms/Å³, atoms {spacing:.2g} Å apart on average (no real structure "
            f"exceeds {MAX_ATOMS_PER_A3:g} atoms/Å³, 0.1 Å apart); with r_max = {r_max:g} Å the "
            f"neighbor list would hold about {neighbors:.2g} neighbors per atom, "
            f"{neighbors * len(pos):.2g} edges: {_UNITS_ADVICE}"
        )
    return (
        f"the periodic cell looks too small for its {len(pos)} atoms: {cell_text} give "
        f"{density:.3g} atoms/Å³, atoms {spacing:.2g} Å apart on average, denser than any solid "
        f"(diamond: 0.18 atoms/Å³, 1.8 Å apart); with r_max = {r_max:g} Å each atom has about "
        f"{neighbors:.2g} neighbors: {_UNITS_ADVICE}"
    )
