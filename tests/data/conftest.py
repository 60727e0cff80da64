from pathlib import Path

import ase
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from nequip.data import TypeMapper

ASPIRIN = Path("/work/shared/data/aspirin_ccsd_15.xyz")


@pytest.fixture
def aspirin_path() -> Path:
    """15 non-periodic aspirin frames; energies in kcal/mol, forces in kcal/mol/Å."""
    return ASPIRIN


@pytest.fixture
def si_c_mapper() -> TypeMapper:
    return TypeMapper(["Si", "C"])


def random_triclinic_atoms(seed: int, num_atoms: int = 8, pbc=(True, True, True)) -> ase.Atoms:
    """Si/C atoms in a seeded random triclinic cell, with energy, forces and Voigt stress labels."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.0, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
    # positions partly outside the cell: the neighbor list must not assume wrapped atoms
    positions = rng.uniform(-0.2, 1.2, (num_atoms, 3)) @ cell
    atoms = ase.Atoms(rng.choice(["Si", "C"], num_atoms), positions=positions, cell=cell, pbc=pbc)
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=rng.normal(),
        forces=rng.normal(size=(num_atoms, 3)),
        stress=rng.normal(size=6),
    )
    return atoms


@pytest.fixture
def make_atoms():
    """Factory of labelled random triclinic Si/C structures (see random_triclinic_atoms)."""
    return random_triclinic_atoms


@pytest.fixture
def periodic_frames():
    """Three labelled periodic Si/C frames of different sizes."""
    return [random_triclinic_atoms(seed, num_atoms) for seed, num_atoms in enumerate((5, 8, 3))]
