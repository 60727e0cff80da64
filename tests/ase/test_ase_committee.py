"""NequIPCalculator on a committee file: the mean of its models and their deviations, equal to
the models run one by one in ASE; a single model has no deviations and says so."""

import re

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from fixtures.model_files import write_checkpoint
from nequip.ase import NequIPCalculator


def sic_supercell():
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.1, seed=7)
    return atoms


@pytest.fixture(scope="module")
def member_calculators(committee_files, tmp_path_factory):
    """One calculator per model of the committee (its checkpoint, run eager)."""
    directory = tmp_path_factory.mktemp("members")
    return [
        NequIPCalculator(write_checkpoint(member, directory / f"member{index}.ckpt"))
        for index, member in enumerate(committee_files.members)
    ]


@pytest.mark.parametrize("mode, target", [("torchscript", None), ("aotinductor", "ase")], ids=["pth", "pt2-ase"])
def test_committee_calculator_gives_the_mean_and_deviations_of_its_models_run_one_by_one(
    committee_files, member_calculators, mode, target
):
    atoms = sic_supercell()
    separate = []
    for calculator in member_calculators:
        atoms.calc = calculator
        separate.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    energies = np.array([energy for energy, _, _ in separate])
    forces = np.stack([force for _, force, _ in separate])
    stresses = np.stack([stress for _, _, stress in separate])

    atoms.calc = NequIPCalculator(committee_files[mode, target, "mean"])
    tolerance = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(atoms.get_potential_energy(), energies.mean(), **tolerance)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(axis=0), **tolerance)
    np.testing.assert_allclose(atoms.get_stress(), stresses.mean(axis=0), **tolerance)
    force_deviation = np.linalg.norm(np.std(forces, axis=0), axis=-1)
    assert force_deviation.max() > 1e-3  # the models differ
    np.testing.assert_allclose(atoms.calc.get_property("force_deviation", atoms), force_deviation, **tolerance)
    np.testing.assert_allclose(atoms.calc.get_property("max_force_deviation", atoms), force_deviation.max(), **tolerance)
    np.testing.assert_allclose(atoms.calc.get_property("energy_deviation", atoms), np.std(energies), **tolerance)


def test_committee_deviations_scale_with_the_units(committee_files):
    atoms = sic_supercell()
    atoms.calc = NequIPCalculator(committee_files["torchscript", None, "mean"])
    in_ev = atoms.calc.get_property("force_deviation", atoms), atoms.calc.get_property("energy_deviation", atoms)
    atoms.calc = NequIPCalculator(
        committee_files["torchscript", None, "mean"], energy_units_to_eV=0.5, length_units_to_A=1.0
    )
    np.testing.assert_allclose(atoms.calc.get_property("force_deviation", atoms), 0.5 * in_ev[0], rtol=1e-12)
    np.testing.assert_allclose(atoms.calc.get_property("energy_deviation", atoms), 0.5 * in_ev[1], rtol=1e-12)


@pytest.mark.parametrize("name", ["force_deviation", "max_force_deviation", "energy_deviation"])
def test_single_model_asked_for_a_deviation_says_it_is_one_model(compiled_models, name):
    path = compiled_models["float64", "torchscript", None]
    atoms = sic_supercell()
    atoms.calc = NequIPCalculator(path)
    message = (
        f"{name} is the deviation of a committee of models, and {path} is one model: compile several "
        "independently trained models into one file (nequip-compile a.nequip.zip b.nequip.zip ... "
        "committee.nequip.pt2) and use that"
    )
    with pytest.raises(PropertyNotImplementedError, match="^" + re.escape(message) + "$"):
        atoms.calc.get_property(name, atoms)
    assert "force_deviation" not in atoms.calc.implemented_properties
    assert atoms.get_potential_energy() == pytest.approx(atoms.calc.results["energy"])
