"""pair_style nequip gives what the ASE calculator gives, on the same compiled file.

Both evaluate the same model; they differ in who builds the graph (LAMMPS' neighbor list and
ghost atoms folded onto their owners, against vesin in the calculator), so every case here is
a way of building that graph wrongly: triclinic images, a cell smaller than twice the cutoff,
shrink-wrapped directions without images, several LAMMPS types per model type, gaps in atom
IDs, NULL types under pair_style hybrid, newton_pair on and off, and tallies that must add.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from lammps_harness import lammps_frame, new_lammps, reference_calculator, results, setup, virial_of

FLOAT64_FILES = {
    "pth": ("float64", "torchscript", None),
    "pt2": ("float64", "aotinductor", "pair_nequip"),
}
RTOL = 1e-8


@pytest.fixture(params=sorted(FLOAT64_FILES), scope="module")
def model_file(request, compiled_models):
    """A float64 compiled file: TorchScript or AOTInductor (pair_nequip target)."""
    return str(compiled_models[FLOAT64_FILES[request.param]])


def assert_close(actual, expected, rtol=RTOL):
    """Equal to ``rtol`` relative to the largest entry of ``expected``."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(np.abs(expected).max(), 1e-300))


def rattled(atoms: Atoms, seed: int) -> Atoms:
    atoms.rattle(0.05, seed=seed)
    return atoms


def sic_triclinic() -> Atoms:
    """64 atoms of 3C-SiC in a sheared cell, larger than twice the cutoff in every direction."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(2)
    atoms.set_cell(atoms.cell[:] + [[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [-0.6, 0.7, 0.0]], scale_atoms=True)
    return rattled(atoms, seed=2)


def sic_primitive() -> Atoms:
    """2 atoms in the fcc primitive cell (3.08 Å vectors): many images of each atom, itself included."""
    return rattled(bulk("SiC", "zincblende", a=4.36), seed=3)


def sic_cluster() -> Atoms:
    """A non-periodic 8-atom SiC cluster (shrink-wrapped box)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    return rattled(Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, pbc=False), seed=4)


def sic_slab() -> Atoms:
    """A 3C-SiC slab, periodic in x and y only (boundary p p s)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 2, 1))
    atoms.set_cell(atoms.cell[:] + [[0.0, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.0]], scale_atoms=True)
    atoms.pbc = (True, True, False)
    return rattled(atoms, seed=5)


SYSTEMS = {
    "triclinic": sic_triclinic,
    "cell_smaller_than_twice_cutoff": sic_primitive,
    "molecule": sic_cluster,
    "slab": sic_slab,
}


def reference(atoms: Atoms, model_file: str):
    """Energy, per-atom energies, forces and virial from the ASE calculator."""
    atoms = atoms.copy()
    atoms.calc = reference_calculator(model_file)
    return atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces(), virial_of(atoms)


def assert_matches_reference(lammps_results, atoms, model_file):
    energy, atomic_energies, forces, virial = reference(atoms, model_file)
    assert_close(lammps_results.energy, energy)
    assert_close(lammps_results.atomic_energies, atomic_energies)
    assert_close(lammps_results.forces, forces)
    assert_close(lammps_results.virial, virial)


def run_nequip(atoms, model_file, names=("Si", "C"), newton=True, **setup_args):
    lmp = new_lammps()
    try:
        pair_lines = ["pair_style nequip", f"pair_coeff * * {model_file} {' '.join(names)}"]
        setup(lmp, atoms, pair_lines, newton=newton, **setup_args)
        return results(lmp)
    finally:
        lmp.close()


@pytest.mark.parametrize("newton", [True, False], ids=["newton_on", "newton_off"])
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_energy_forces_virial_equal_ase(system, newton, model_file):
    atoms = lammps_frame(SYSTEMS[system]())
    assert_matches_reference(run_nequip(atoms, model_file, newton=newton), atoms, model_file)


def test_several_lammps_types_map_to_one_model_type(model_file):
    atoms = lammps_frame(sic_triclinic())
    # every other Si atom is LAMMPS type 3, also Si for the model
    symbols = atoms.get_chemical_symbols()
    lammps_types = [1 if s == "C" else (2 if i % 2 else 3) for i, s in enumerate(symbols)]
    lammps_results = run_nequip(atoms, model_file, names=("C", "Si", "Si"), lammps_types=lammps_types)
    assert_matches_reference(lammps_results, atoms, model_file)


@pytest.mark.parametrize("newton", [True, False], ids=["newton_on", "newton_off"])
def test_gaps_in_atom_ids_after_delete_atoms(newton, model_file):
    atoms = lammps_frame(sic_triclinic())
    deleted = [3, 10, 11, 40, 64]
    lmp = new_lammps()
    try:
        setup(lmp, atoms, ["pair_style nequip", f"pair_coeff * * {model_file} Si C"], newton=newton)
        lmp.commands_list([f"group gone id {' '.join(map(str, deleted))}", "delete_atoms group gone compress no"])
        lammps_results = results(lmp)
    finally:
        lmp.close()
    kept = [i for i in range(len(atoms)) if i + 1 not in deleted]
    np.testing.assert_array_equal(lammps_results.ids, np.array(kept) + 1)
    assert_matches_reference(lammps_results, atoms[kept], model_file)


def test_hybrid_overlay_tallies_add(model_file):
    """Two nequip sub-styles on top of each other give exactly twice everything."""
    atoms = lammps_frame(sic_triclinic())
    lmp = new_lammps()
    try:
        pair_lines = [
            "pair_style hybrid/overlay nequip nequip",
            f"pair_coeff * * nequip 1 {model_file} Si C",
            f"pair_coeff * * nequip 2 {model_file} Si C",
        ]
        setup(lmp, atoms, pair_lines)
        doubled = results(lmp)
    finally:
        lmp.close()
    single = run_nequip(atoms, model_file)
    assert_close(doubled.energy, 2 * single.energy)
    assert_close(doubled.atomic_energies, 2 * single.atomic_energies)
    assert_close(doubled.forces, 2 * single.forces)
    assert_close(doubled.virial, 2 * single.virial)


def test_null_types_are_left_to_other_hybrid_styles(model_file):
    """Atoms of a NULL type are no part of the model's graph (here pair_style zero handles them)."""
    atoms = lammps_frame(sic_triclinic())
    others = [5, 17, 30]  # made LAMMPS type 3
    lammps_types = [3 if i in others else {"Si": 1, "C": 2}[s] for i, s in enumerate(atoms.get_chemical_symbols())]
    lmp = new_lammps()
    try:
        pair_lines = [
            "pair_style hybrid nequip zero 4.0",
            f"pair_coeff * * nequip {model_file} Si C NULL",
            "pair_coeff * 3 zero",
        ]
        setup(lmp, atoms, pair_lines, lammps_types=lammps_types)
        lammps_results = results(lmp)
    finally:
        lmp.close()
    kept = [i for i in range(len(atoms)) if i not in others]
    energy, atomic_energies, forces, virial = reference(atoms[kept], model_file)
    assert_close(lammps_results.energy, energy)
    assert_close(lammps_results.atomic_energies[kept], atomic_energies)
    assert_close(lammps_results.forces[kept], forces)
    np.testing.assert_array_equal(lammps_results.forces[others], 0.0)
    np.testing.assert_array_equal(lammps_results.atomic_energies[others], 0.0)
    assert_close(lammps_results.virial, virial)


def test_per_edge_type_cutoffs(compiled_models):
    """The float32 model cuts Si-Si at 4.0, Si-C at 3.5 and C-C at 3.0 Å (float32 tolerance)."""
    model_file = str(compiled_models["float32", "torchscript", None])
    atoms = lammps_frame(sic_triclinic())
    lammps_results = run_nequip(atoms, model_file)
    energy, atomic_energies, forces, virial = reference(atoms, model_file)
    assert_close(lammps_results.energy, energy, rtol=1e-6)
    assert_close(lammps_results.atomic_energies, atomic_energies, rtol=1e-6)
    assert_close(lammps_results.forces, forces, rtol=1e-5)
    assert_close(lammps_results.virial, virial, rtol=1e-5)


def test_isolated_atom_has_its_type_energy(model_file):
    """An atom without neighbors (and a system without edges) is its per-type energy shift."""
    atoms = Atoms("SiC", positions=[[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]], pbc=False)
    lammps_results = run_nequip(atoms, model_file)
    energy, atomic_energies, forces, _ = reference(atoms, model_file)
    assert_close(lammps_results.energy, energy)
    assert_close(lammps_results.atomic_energies, atomic_energies)
    np.testing.assert_array_equal(lammps_results.forces, 0.0)
