"""NequIPCalculator gives what the eager model gives (energy, per-atom energies, forces,
stress in ASE's Voigt order and sign), for every compiled format, on periodic, small-cell,
slab and non-periodic structures; it converts units and relies on ASE's caching."""

import numpy as np
import pytest

from ase_systems import SYSTEMS, eager_reference, sic_triclinic
from fixtures.compiled import COMPILED_KEYS
from nequip.ase import NequIPCalculator

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def key_id(key) -> str:
    return "-".join(part for part in key if part)


@pytest.fixture(params=COMPILED_KEYS, ids=key_id, scope="module")
def compiled(request, compiled_models):
    """(model_dtype, calculator, eager model) for one compiled file."""
    key = request.param
    return key[0], NequIPCalculator(compiled_models[key]), compiled_models.eager[key[0]]


def assert_close(actual, expected, model_dtype, name):
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(np.asarray(actual) - expected).max())
    assert error <= TOLERANCE[model_dtype] * scale, f"{name}: max |calculator - eager| = {error:.3g}"


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_calculator_equals_eager_model(compiled, system):
    model_dtype, calculator, eager = compiled
    atoms = SYSTEMS[system]()
    expected = eager_reference(eager, atoms)
    atoms.calc = calculator
    assert_close(atoms.get_potential_energy(), expected["energy"], model_dtype, "energy")
    assert_close(atoms.get_potential_energy(force_consistent=True), expected["energy"], model_dtype, "free_energy")
    assert_close(atoms.get_potential_energies(), expected["energies"], model_dtype, "energies")
    assert_close(atoms.get_forces(), expected["forces"], model_dtype, "forces")
    if "stress" in expected:
        stress = atoms.get_stress()
        assert stress.shape == (6,)
        assert_close(stress, expected["stress"], model_dtype, "stress")


def test_model_units_are_converted_to_ev_and_angstrom(compiled_models):
    key = ("float64", "aotinductor", "ase")
    energy_unit, length_unit = 0.25, 0.5  # model energy unit in eV, length unit in Å
    atoms = sic_triclinic()
    in_model_units = atoms.copy()
    in_model_units.set_cell(atoms.cell.array / length_unit, scale_atoms=True)
    expected = eager_reference(compiled_models.eager["float64"], in_model_units)

    atoms.calc = NequIPCalculator(
        compiled_models[key], energy_units_to_eV=energy_unit, length_units_to_A=length_unit
    )
    assert_close(atoms.get_potential_energy(), expected["energy"] * energy_unit, "float64", "energy")
    assert_close(atoms.get_potential_energies(), expected["energies"] * energy_unit, "float64", "energies")
    assert_close(atoms.get_forces(), expected["forces"] * energy_unit / length_unit, "float64", "forces")
    assert_close(atoms.get_stress(), expected["stress"] * energy_unit / length_unit**3, "float64", "stress")


def test_species_to_type_map_renames_species(compiled_models):
    path = compiled_models["float64", "torchscript", None]
    atoms = sic_triclinic()
    expected = atoms.copy()
    expected.calc = NequIPCalculator(path)
    symbols = ["Ge" if s == "Si" else s for s in atoms.get_chemical_symbols()]
    atoms.set_chemical_symbols(symbols)
    atoms.calc = NequIPCalculator(path, species_to_type_map={"Ge": "Si", "C": "C"})
    assert atoms.get_potential_energy() == expected.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), expected.get_forces())


class CountingModel:
    """Wraps the calculator's model and counts its evaluations."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args):
        self.calls += 1
        return self.model(*args)


def test_unchanged_atoms_are_not_evaluated_again(compiled_models):
    atoms = sic_triclinic()
    atoms.calc = NequIPCalculator(compiled_models["float64", "aotinductor", "ase"])
    counter = atoms.calc.model = CountingModel(atoms.calc.model)

    forces = atoms.get_forces()
    np.testing.assert_array_equal(atoms.get_forces(), forces)
    atoms.get_potential_energy()
    atoms.get_potential_energies()
    atoms.get_stress()
    assert counter.calls == 1

    atoms.positions[0, 0] += 0.01
    assert not np.array_equal(atoms.get_forces(), forces)
    assert counter.calls == 2
