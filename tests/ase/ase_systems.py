"""Structures for the ASE calculator tests and the eager reference they are checked against."""

from typing import Dict

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.stress import full_3x3_to_voigt_6_stress

from nequip.data import TypeMapper, from_ase


def sic_triclinic() -> Atoms:
    """64 atoms of 3C-SiC in a sheared cell, rattled (periodic)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(2)
    atoms.set_cell(atoms.cell.array + [[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [-0.6, 0.7, 0.0]], scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    return atoms


def sic_primitive() -> Atoms:
    """2 atoms in the fcc primitive cell (3.08 Å vectors, smaller than the cutoff)."""
    atoms = bulk("SiC", "zincblende", a=4.36)
    atoms.rattle(0.05, seed=3)
    return atoms


def sic_cluster() -> Atoms:
    """8 atoms of SiC without periodicity."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.pbc = False
    atoms.rattle(0.05, seed=4)
    return atoms


def sic_slab() -> Atoms:
    """3C-SiC periodic in x and y, with vacuum along z."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((1, 1, 2))
    atoms.center(vacuum=5.0, axis=2)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.05, seed=5)
    return atoms


SYSTEMS = {
    "triclinic": sic_triclinic,
    "primitive": sic_primitive,
    "cluster": sic_cluster,
    "slab": sic_slab,
}


def eager_reference(model: torch.nn.Module, atoms: Atoms) -> Dict[str, np.ndarray]:
    """What the calculator must give, from the eager model on the data layer's frame of
    ``atoms`` (ASE names and units; stress in Voigt order, absent without periodicity)."""
    metadata = model.metadata()
    type_names = metadata["type_names"].split(" ")
    cutoff = metadata.get("per_edge_type_cutoff")
    num_types = len(type_names)
    frame = from_ase(
        atoms,
        TypeMapper(type_names),
        float(metadata["r_max"]),
        per_edge_type_cutoff=None if cutoff is None else np.array(cutoff.split(), float).reshape(num_types, num_types),
        labels=(),
    )
    out = model(frame)
    reference = {
        "energy": float(out["total_energy"].detach().sum()),
        "energies": out["atomic_energy"].detach().numpy().reshape(-1),
        "forces": out["forces"].detach().numpy(),
    }
    if atoms.pbc.any():
        reference["stress"] = full_3x3_to_voigt_6_stress(out["stress"].detach().numpy().reshape(3, 3))
    return reference
