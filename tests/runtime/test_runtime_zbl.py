"""Every form of a model with ZBL repulsion gives the eager model's results: checkpoint,
package, .pth and .pt2 (pair_nequip_domain: its whole model, and its parts layer by layer
with the pair term in a part of its own), and the ASE calculator on each file."""

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

from fixtures.compiled import R_MAX, TYPE_NAMES, ZBL_MODEL_CONFIG
from fixtures.model_files import write_checkpoint
from nequip._runtime import Model, ModelFileError
from nequip.ase import NequIPCalculator
from nequip.data import TypeMapper, from_ase
from nequip.inference import open_model
from nequip.model import NequIPModel
from fixtures.edited_files import with_pth_metadata
from runtime_cases import assert_matches, eager_outputs, random_frames
from test_runtime_exchange import unfolded


def frames(zbl_model):
    """Random frames (pairs down to 1.0 Å, periodic images in small cells) and the example
    frame (a pair at 0.9 Å), as numpy."""
    example = {name: value.numpy().reshape((3, 3) if name == "cell" else value.shape) for name, value in zbl_model.example.items()}
    return random_frames(10, seed=7) + [example]


def as_data(frame):
    return {
        name: torch.from_numpy(frame[name]).reshape((1, 3, 3) if name == "cell" else frame[name].shape)
        for name in ("pos", "atom_types", "edge_index", "edge_cell_shift", "cell")
    }


def test_zbl_frames_exercise_the_pair_term(zbl_model):
    """The same weights without ZBL give other results on these frames: the comparisons below
    would see a pair term that a form lost."""
    without = NequIPModel(**dict(ZBL_MODEL_CONFIG, zbl=None)).eval()
    without.load_state_dict(zbl_model.eager.state_dict())
    differences = [
        abs(float(eager_outputs(zbl_model.eager, frame)["total_energy"] - eager_outputs(without, frame)["total_energy"]))
        for frame in frames(zbl_model)
    ]
    assert max(differences) > 10.0 and sum(d > 1e-3 for d in differences) >= 5


def test_checkpoint_and_package_of_the_zbl_model_give_its_results(zbl_model, tmp_path):
    from nequip.package import build_package

    checkpoint = write_checkpoint(zbl_model.eager, tmp_path / "zbl.ckpt")
    package = tmp_path / "zbl.nequip.zip"
    build_package(checkpoint, package)
    for path in (checkpoint, package):
        opened = open_model(path)
        assert opened.metadata["pair_potential"] == "zbl"
        for frame in frames(zbl_model):
            got, expected = opened(as_data(frame)), eager_outputs(zbl_model.eager, frame)
            for name in ("total_energy", "atomic_energy", "forces", "virial"):
                if name not in got:
                    continue  # the virial of a cell without volume
                assert_matches(got[name].numpy().reshape(expected[name].shape), expected[name], "float64", f"{path.name} {name}")


@pytest.mark.slow  # compiles files (minutes)
@pytest.mark.parametrize("kind", ["pth", "pt2"])
def test_compiled_zbl_model_is_the_eager_model(zbl_model, kind):
    model = Model(str(getattr(zbl_model, kind)))
    assert model.metadata["pair_potential"] == "zbl"
    for frame in frames(zbl_model):
        got = model.compute(frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
        expected = eager_outputs(zbl_model.eager, frame)
        for name in ("total_energy", "atomic_energy", "forces", "virial", "atom_virial"):
            assert_matches(got[name], expected[name], "float64", name)


@pytest.mark.parametrize("kind", ["pth", "pt2"])
def test_zbl_layer_by_layer_with_ghost_images_is_the_folded_frame(zbl_model, kind):
    model = Model(str(getattr(zbl_model, kind)))
    assert model.exchanges_features
    compared = 0
    for frame in frames(zbl_model):
        pos, types, edge_index, owner = unfolded(frame)
        num_atoms = len(frame["pos"])
        got = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])
        expected = eager_outputs(zbl_model.eager, frame)
        forces = np.zeros((num_atoms, 3))
        np.add.at(forces, owner, got["forces"])
        atom_virial = np.zeros((num_atoms, 3, 3))
        np.add.at(atom_virial, owner, got["atom_virial"])
        assert_matches(got["total_energy"], expected["total_energy"], "float64", "total_energy")
        assert_matches(got["atomic_energy"][:num_atoms], expected["atomic_energy"], "float64", "atomic_energy")
        assert_matches(forces, expected["forces"], "float64", "forces")
        assert_matches(got["virial"], expected["virial"], "float64", "virial")
        assert_matches(atom_virial, expected["atom_virial"], "float64", "atom_virial")
        compared += 1
    assert compared == len(frames(zbl_model))


def test_pair_energy_is_one_part_of_the_domain_file(zbl_model):
    metadata = Model(str(zbl_model.pt2)).metadata
    parts = metadata["nequip_aoti_parts"].split()
    assert parts[-1] == "pair_energy_vjp" and parts.count("pair_energy_vjp") == 1
    for key, value in zbl_model.eager.metadata().items():
        assert metadata[key] == value


@pytest.mark.parametrize("kind", ["pth", "pt2"])
def test_ase_calculator_with_zbl_is_the_eager_model(zbl_model, kind):
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.rattle(0.05, seed=3)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.5, 0.3]  # 0.77 Å
    expected = zbl_model.eager(from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX))
    atoms.calc = NequIPCalculator(getattr(zbl_model, kind))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the close pair
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    assert energy == pytest.approx(float(expected["total_energy"]), rel=1e-10)
    assert_matches(forces, expected["forces"].detach().numpy(), "float64", "forces")
    assert_matches(stress, expected["stress"].detach().numpy()[0], "float64", "stress")


def test_malformed_pair_potential_metadata_is_refused(zbl_model, tmp_path):
    path = with_pth_metadata(zbl_model.pth, tmp_path / "m.nequip.pth", "pair_potential", "lj")
    with pytest.raises(ModelFileError) as error:
        Model(str(path))
    assert str(error.value) == f"{path}: metadata key 'pair_potential' is malformed: expected 'zbl', got 'lj'"
