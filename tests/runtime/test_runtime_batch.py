"""Many frames per call (Model.compute_batch): files that take batches (target batch, our .pth)
give each frame what the eager model gives it alone; bad batches are refused, each with one
clear message, before the model runs; files of one frame per call say how to get a batch file."""

import re

import numpy as np
import pytest

from nequip._runtime import InputError, Model, ModelFileError
from fixtures.edited_files import with_pt2_metadata, with_pth_metadata
from runtime_cases import assert_matches, eager_outputs, random_frames

BATCH_FILES = {"pt2": ("float64", "aotinductor", "batch"), "pth": ("float64", "torchscript", None)}


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


@pytest.fixture(scope="module", params=list(BATCH_FILES))
def batch_model(request, compiled_models):
    return Model(str(compiled_models[BATCH_FILES[request.param]]))


def as_batch(frames):
    """Frames of runtime_cases.random_frames as compute_batch's arguments."""
    num_atoms = np.array([len(frame["pos"]) for frame in frames])
    first_atom = np.cumsum(num_atoms) - num_atoms
    return dict(
        pos=np.concatenate([frame["pos"] for frame in frames]),
        atom_types=np.concatenate([frame["atom_types"] for frame in frames]),
        edge_index=np.concatenate([frame["edge_index"] + first for frame, first in zip(frames, first_atom)], axis=1),
        batch=np.repeat(np.arange(len(frames)), num_atoms),
        num_atoms=num_atoms,
        edge_cell_shift=np.concatenate([frame["edge_cell_shift"] for frame in frames]),
        # random_frames gives non-periodic frames a zero cell, as a batch has them
        cell=np.stack([frame["cell"] for frame in frames]),
    )


def test_files_that_take_batches(compiled_models):
    takes = {key: Model(str(compiled_models[key])).takes_batches for key in BATCH_FILES.values()}
    assert takes == {key: True for key in BATCH_FILES.values()}
    assert not Model(str(compiled_models["float64", "aotinductor", "ase"])).takes_batches


def test_each_frame_of_a_batch_equals_the_eager_model_on_it_alone(batch_model, compiled_models):
    eager = compiled_models.eager["float64"]
    frames = random_frames(12, seed=5)
    assert any(np.linalg.det(frame["cell"]) == 0 for frame in frames) and any(len(f["pos"]) == 1 for f in frames)
    out = batch_model.compute_batch(**as_batch(frames))
    num_atoms = sum(len(frame["pos"]) for frame in frames)
    assert out["total_energy"].shape == (12,) and out["forces"].shape == (num_atoms, 3)
    assert out["stress"].shape == out["virial"].shape == (12, 3, 3)
    first = 0
    for index, frame in enumerate(frames):
        atoms = slice(first, first + len(frame["pos"]))
        first = atoms.stop
        expected = eager_outputs(eager, frame)
        assert_matches(out["total_energy"][index], expected["total_energy"], "float64", f"frame {index} total_energy")
        assert_matches(out["atomic_energy"][atoms], expected["atomic_energy"], "float64", f"frame {index} atomic_energy")
        assert_matches(out["forces"][atoms], expected["forces"], "float64", f"frame {index} forces")
        assert_matches(out["virial"][index], expected["virial"], "float64", f"frame {index} virial")
        if np.linalg.det(frame["cell"]) != 0:
            assert_matches(out["stress"][index], expected["stress"], "float64", f"frame {index} stress")
        else:  # a frame without a volume has no stress
            assert np.isnan(out["stress"][index]).all()


def test_a_batch_file_evaluates_one_frame_as_a_batch_of_one(compiled_models):
    model = Model(str(compiled_models[BATCH_FILES["pt2"]]))
    frame = random_frames(3, seed=2)[2]
    one = model.compute(frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
    batch = model.compute_batch(**as_batch([frame]))
    assert_matches(batch["total_energy"][0], one["total_energy"], "float64", "total_energy")
    assert_matches(batch["forces"], one["forces"], "float64", "forces")


def good_batch():
    """Two frames of 3 and 2 atoms, each with edges of its own."""
    frames = [
        dict(pos=np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0]]), atom_types=np.array([0, 1, 0]),
             edge_index=np.array([[0, 1, 0, 2], [1, 0, 2, 0]]), edge_cell_shift=np.zeros((4, 3)), cell=6.0 * np.eye(3)),
        dict(pos=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.6]]), atom_types=np.array([1, 1]),
             edge_index=np.array([[0, 1], [1, 0]]), edge_cell_shift=np.zeros((2, 3)), cell=np.zeros((3, 3))),
    ]  # fmt: skip
    return as_batch(frames)


BAD_BATCHES = [
    ("batch", np.array([0, 1, 0, 1, 1]),
     "batch must be sorted (the atoms of frame 0, then those of frame 1, ...): batch[2] = 0 follows batch[1] = 1"),
    ("num_atoms", np.array([3, 1]), "num_atoms must sum to N = 5 (the atoms in pos), got 4"),
    ("edge_index", np.array([[0, 1, 0, 2, 3, 4], [1, 0, 3, 0, 4, 3]]),
     "edge 2 joins atom 0 (frame 0) and atom 3 (frame 1): an edge must join two atoms of the same frame"),
    ("batch", np.array([0, 0, 1, 1, 1]), "batch puts 2 atoms in frame 0 but num_atoms[0] = 3"),
    ("batch", np.array([0, 0, 0, 1, 2]),
     "batch values must lie in [0, F) = [0, 2), the frames of num_atoms, got values in [0, 2]"),
    ("batch", np.array([0, 0, 0, 1]), "batch must have shape (N,) = (5,), got (4,)"),
    ("batch", np.zeros(5), "batch must have an integer dtype, got float64"),
    ("num_atoms", np.array([5, 0]), "num_atoms must be at least 1 for every frame, got 0 for frame 1"),
    ("num_atoms", np.zeros(0, dtype=np.int64), "num_atoms must hold at least one frame, got shape (0,)"),
    ("cell", np.eye(3), "cell must have shape (F, 3, 3) = (2, 3, 3), one per frame (zero for a non-periodic frame), got (3, 3)"),
    ("cell", np.full((2, 3, 3), np.nan), "cell contains non-finite values (NaN or infinity)"),
    ("pos", np.zeros((5, 2)), "pos must have shape (N, 3), got (5, 2)"),
]  # fmt: skip


@pytest.mark.parametrize("name, value, message", BAD_BATCHES, ids=[f"{name}{i}" for i, (name, _, _) in enumerate(BAD_BATCHES)])
def test_bad_batch_is_refused_with_one_clear_message(batch_model, name, value, message):
    inputs = good_batch()
    inputs[name] = value
    with raises(InputError, message):
        batch_model.compute_batch(**inputs)
    assert np.isfinite(batch_model.compute_batch(**good_batch())["total_energy"]).all()


def test_a_file_of_one_frame_per_call_refuses_a_batch_saying_how_to_get_one(compiled_models):
    path = compiled_models["float64", "aotinductor", "pair_nequip"]
    model = Model(str(path))
    message = (
        f"{path}: this file takes one frame per call (its inputs: pos edge_index atom_types cell edge_cell_shift); "
        "compile the model with `nequip-compile ... --target batch` (.pt2) or again with this version of nequip (.pth)"
    )
    with raises(InputError, message):
        model.compute_batch(**good_batch())


@pytest.mark.parametrize("kind", ["pt2", "pth"])
def test_a_file_listing_batch_without_num_atoms_is_refused(kind, compiled_models, tmp_path):
    source = compiled_models[BATCH_FILES[kind]]
    if kind == "pt2":
        key, path = "nequip_aoti_inputs", with_pt2_metadata(
            source, tmp_path / "a.nequip.pt2", "nequip_aoti_inputs", "pos edge_index atom_types cell edge_cell_shift batch"
        )
    else:
        key, path = "nequip_torchscript_inputs", with_pth_metadata(
            source, tmp_path / "a.nequip.pth", "nequip_torchscript_inputs", "pos edge_index atom_types cell edge_cell_shift batch"
        )
    message = (
        f"{path}: metadata key '{key}' is malformed: 'batch' and 'num_atoms' go together (a batch needs both), "
        "got 'pos edge_index atom_types cell edge_cell_shift batch'"
    )
    with raises(ModelFileError, message):
        Model(str(path))


def test_a_file_giving_stress_only_gets_each_frames_virial_where_the_cell_has_a_volume(compiled_models, tmp_path):
    """As the other release's batch files (no virial): -stress * V per frame, NaN without a volume."""
    source = compiled_models[BATCH_FILES["pth"]]
    path = with_pth_metadata(
        source, tmp_path / "stress_only.nequip.pth", "nequip_torchscript_outputs", "atomic_energy total_energy forces stress"
    )
    full = Model(str(source)).compute_batch(**good_batch())
    stress_only = Model(str(path)).compute_batch(**good_batch())
    assert_matches(stress_only["virial"][0], full["virial"][0], "float64", "virial of the periodic frame")
    assert np.isnan(stress_only["virial"][1]).all() and np.isnan(stress_only["stress"][1]).all()
