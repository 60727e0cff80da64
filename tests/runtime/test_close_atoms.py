"""Atoms closer than a model can be trusted at (closer than the closest pair of its training
data, metadata key closest_training_pair, or than 0.1 * r_max when the model does not record
it) give a finite but extrapolated energy: the runtime reports them once per model, with one
message from one implementation for compiled files (Model.compute) and eager models
(_runtime.close_pair_warning), and ASE shows it as a CloseAtomsWarning. LAMMPS: once per run,
tests/lammps/test_lammps_errors.py."""

import re
import warnings

import numpy as np
import pytest
from ase import Atoms

from fixtures.edited_files import with_pt2_metadata, with_pth_metadata
from nequip._runtime import CloseAtomsWarning, Model, ModelFileError, close_pair_threshold, close_pair_warning
from nequip.ase import NequIPCalculator

KEYS = {"pth": ("float64", "torchscript", None), "pt2": ("float64", "aotinductor", "pair_nequip")}


def close_pair(distance: float) -> dict:
    """A C atom and two Si atoms, the Si pair ``distance`` apart, in a 10 Å box (no images)."""
    pos = np.array([[3.0, 3.0, 3.0], [3.0 + distance, 3.0, 3.0], [3.0, 5.0, 3.0]])
    edge_index = np.array([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]])
    return dict(
        pos=pos,
        atom_types=np.array([0, 0, 1]),
        edge_index=edge_index,
        edge_cell_shift=np.zeros((6, 3)),
        cell=10.0 * np.eye(3),
    )


def message(path, distance: str, bound: str, pair: str = "atoms 0 and 1") -> str:
    return (
        f"{path}: {pair} are {distance} Å apart, closer than {bound}: the model extrapolates there and its energy "
        "and forces may be far off; check the structure (this warning is given once per model)"
    )


def warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("kind", KEYS)
def test_a_compiled_model_warns_once_of_atoms_closer_than_a_tenth_of_r_max(compiled_models, kind):
    path = compiled_models[KEYS[kind]]
    model = Model(str(path))
    assert model.close_pair_threshold == pytest.approx(0.4)  # r_max 4.0, no closest_training_pair
    out, caught = warnings_of(lambda: model.compute(**close_pair(0.3)))
    assert np.isfinite(out["total_energy"])
    assert caught == [(CloseAtomsWarning, message(path, "0.3", "0.1 * r_max = 0.4 Å"))]
    # once per model: not again, for this pair or a closer one
    assert warnings_of(lambda: model.compute(**close_pair(0.2)))[1] == []
    # atoms as close as the model has seen: no warning
    assert warnings_of(lambda: Model(str(path)).compute(**close_pair(0.5)))[1] == []


@pytest.mark.parametrize("kind", KEYS)
def test_compiled_and_eager_paths_give_the_same_warning(compiled_models, kind):
    """The eager path (nequip.inference) asks _runtime.close_pair_warning: the same text."""
    path = compiled_models[KEYS[kind]]
    model = Model(str(path))
    frame = close_pair(0.3)
    _, caught = warnings_of(lambda: model.compute(**frame))
    eager = close_pair_warning(str(path), model.metadata, frame["pos"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
    assert caught == [(CloseAtomsWarning, eager)]


@pytest.mark.parametrize("kind", KEYS)
def test_the_closest_training_pair_is_the_threshold_when_the_file_records_it(compiled_models, tmp_path, kind):
    source = compiled_models[KEYS[kind]]
    edit = with_pth_metadata if kind == "pth" else with_pt2_metadata
    path = edit(source, tmp_path / f"m.nequip.{kind}", "closest_training_pair", "1.5")
    model = Model(str(path))
    assert model.close_pair_threshold == 1.5
    _, caught = warnings_of(lambda: model.compute(**close_pair(1.2)))
    assert caught == [(CloseAtomsWarning, message(path, "1.2", "the closest pair the model was trained on, 1.5 Å"))]


def test_close_pair_threshold_from_metadata():
    assert close_pair_threshold({"r_max": "4.0"}) == pytest.approx(0.4)
    assert close_pair_threshold({"r_max": "4.0", "closest_training_pair": "1.25"}) == 1.25
    with pytest.raises(ModelFileError, match="^" + re.escape("the model: metadata key 'closest_training_pair' is malformed: expected a positive decimal float, got '-1'") + "$"):
        close_pair_threshold({"r_max": "4.0", "closest_training_pair": "-1"})
    with pytest.raises(ModelFileError, match="^" + re.escape("m.nequip.zip: required metadata key 'r_max' is missing") + "$"):
        close_pair_threshold({}, "m.nequip.zip")


def test_ase_shows_the_warning_once_per_calculator(compiled_models):
    path = compiled_models[KEYS["pt2"]]
    calculator = NequIPCalculator(path)

    def energy(distance):
        atoms = Atoms("Si2C", positions=close_pair(distance)["pos"], cell=10.0 * np.eye(3), pbc=False)
        atoms.calc = calculator
        return atoms.get_potential_energy()

    energy_close, caught = warnings_of(lambda: energy(0.3))
    assert np.isfinite(energy_close)
    assert caught == [(CloseAtomsWarning, message(path, "0.3", "0.1 * r_max = 0.4 Å"))]
    assert warnings_of(lambda: energy(0.25))[1] == []
