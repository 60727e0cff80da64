"""The systems compiled files are checked on, as FILE_CONTRACT §1 frames (r_max of the tiny models)."""

from typing import Dict

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip.data import TypeMapper, from_ase


def _frame(atoms: Atoms, periodic: bool = True) -> Dict[str, torch.Tensor]:
    frame = from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX)
    if not periodic:  # FILE_CONTRACT §3: cell and shifts may be absent for a molecule
        del frame["cell"], frame["edge_cell_shift"]
    return frame


def _rattled(atoms: Atoms, seed: int) -> Atoms:
    atoms.rattle(0.05, seed=seed)
    return atoms


def periodic_triclinic() -> Atoms:
    """3C-SiC primitive cells (fcc lattice vectors at 60 degrees), 2x2x2, sheared and rattled."""
    atoms = bulk("SiC", "zincblende", a=4.36).repeat((2, 2, 2))
    strain = np.eye(3) + np.random.default_rng(3).uniform(-0.04, 0.04, (3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    return _rattled(atoms, seed=4)


def cell_smaller_than_cutoff() -> Atoms:
    """One 2-atom primitive cell (vectors 3.08 A < r_max): atoms see many of their own images."""
    return _rattled(bulk("SiC", "zincblende", a=4.36), seed=5)


def molecule() -> Atoms:
    """A non-periodic SiC4-like cluster plus a second Si."""
    bond = 1.89 / np.sqrt(3.0)
    positions = [[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
    atoms = Atoms("SiC4Si", positions=np.array(positions + [[2.2, 2.2, 2.2]]) * bond)
    return _rattled(atoms, seed=6)


def single_atom() -> Atoms:
    return Atoms("C", positions=[[0.1, 0.2, 0.3]])


def no_edges() -> Atoms:
    """Three atoms in a periodic 20 A box, all further apart than r_max: N = 3, E = 0."""
    return Atoms("SiCSi", positions=[[1, 1, 1], [8, 8, 8], [15, 2, 9]], cell=np.eye(3) * 20.0, pbc=True)


def large_cell() -> Atoms:
    """3C-SiC conventional cell 6x6x6: 1728 atoms."""
    return _rattled(bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((6, 6, 6)), seed=7)


SYSTEMS = {
    "periodic_triclinic": lambda: _frame(periodic_triclinic()),
    "cell_smaller_than_cutoff": lambda: _frame(cell_smaller_than_cutoff()),
    "molecule": lambda: _frame(molecule(), periodic=False),
    "single_atom": lambda: _frame(single_atom(), periodic=False),
    "no_edges": lambda: _frame(no_edges()),
    "large_cell": lambda: _frame(large_cell()),
}
