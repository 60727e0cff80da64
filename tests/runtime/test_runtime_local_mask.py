"""local_mask and atom_virial through the C++ runtime (what pair_style nequip uses on several
MPI ranks): the masked energy is the sum of the local atoms' energies, forces on every atom
and per-atom virials are the eager model's with the same mask, and a mask is refused by a
model that would ignore it."""

import re

import numpy as np
import pytest

from nequip._runtime import InputError, Model
from runtime_cases import TOLERANCE, assert_matches, eager_outputs, random_frames

DOMAIN_FILES = {
    "pt2-float64": ("float64", "aotinductor", "pair_nequip_domain"),
    "pt2-float32": ("float32", "aotinductor", "pair_nequip_domain"),
    "pth-float64": ("float64", "torchscript", None),
}
FIVE_INPUTS = ["pos", "edge_index", "atom_types", "cell", "edge_cell_shift"]


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


@pytest.fixture(params=sorted(DOMAIN_FILES), scope="module")
def domain_model(request, compiled_models):
    """(runtime model, eager model, dtype) of a file that takes local_mask."""
    key = DOMAIN_FILES[request.param]
    return Model(str(compiled_models[key])), compiled_models.eager[key[0]], key[0]


@pytest.fixture(scope="module")
def frames(compiled_models):
    """Random frames with at least two atoms (periodic, molecules, slabs) and random masks."""
    cutoff = compiled_models.eager["float32"].metadata().get("per_edge_type_cutoff")
    table = None if cutoff is None else np.array([float(c) for c in cutoff.split()]).reshape(2, 2)
    rng = np.random.default_rng(7)
    chosen = []
    for frame in random_frames(16, per_edge_type_cutoff=table, seed=11):
        if len(frame["pos"]) < 2:
            continue
        mask = rng.random(len(frame["pos"])) < 0.5
        mask[0], mask[-1] = True, False  # both kinds in every frame
        chosen.append(dict(frame, local_mask=mask))
    return chosen


def run(model, frame, local_mask="frame"):
    mask = frame["local_mask"] if isinstance(local_mask, str) else local_mask
    return model.compute(
        frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"],
        local_mask=mask,
    )  # fmt: skip


def test_fields_of_files_that_take_local_mask(domain_model):
    model, _, _ = domain_model
    # our .pth files also take batches (batch, num_atoms: Model.compute_batch)
    batch_inputs = ["batch", "num_atoms"] if model.takes_batches else []
    assert model.input_names == FIVE_INPUTS + ["local_mask"] + batch_inputs
    assert "atom_virial" in model.output_names
    assert model.num_layers == 2


def test_fields_of_a_pair_nequip_file(compiled_models):
    model = Model(str(compiled_models["float64", "aotinductor", "pair_nequip"]))
    assert model.input_names == FIVE_INPUTS
    assert model.output_names == ["atomic_energy", "forces", "virial"]


def test_masked_energy_is_the_sum_of_local_atomic_energies(domain_model, frames):
    model, _, dtype = domain_model
    for index, frame in enumerate(frames):
        mask = frame["local_mask"]
        masked, full = run(model, frame), run(model, frame, local_mask=None)
        # the local atoms' energies do not change with the mask; the others' count for nothing
        assert_matches(masked["atomic_energy"][mask], full["atomic_energy"][mask], dtype, f"frame {index}")
        assert np.all(masked["atomic_energy"][~mask] == 0.0), f"frame {index}"
        assert masked["total_energy"] == pytest.approx(full["atomic_energy"][mask].sum(), rel=TOLERANCE[dtype], abs=1e-12)


def test_masked_outputs_equal_the_eager_model_with_the_same_mask(domain_model, frames):
    model, eager_model, dtype = domain_model
    for index, frame in enumerate(frames):
        got, expected = run(model, frame), eager_outputs(eager_model, frame, frame["local_mask"])
        assert_matches(got["total_energy"], expected["total_energy"], dtype, f"frame {index} energy")
        assert_matches(got["atomic_energy"], expected["atomic_energy"], dtype, f"frame {index} atomic_energy")
        # forces on every atom, local or not: those on the others belong to their owners
        assert_matches(got["forces"], expected["forces"], dtype, f"frame {index} forces")
        assert_matches(got["virial"], expected["virial"], dtype, f"frame {index} virial")
        assert_matches(got["atom_virial"], expected["atom_virial"], dtype, f"frame {index} atom_virial")


def test_atom_virials_sum_to_the_virial(domain_model, frames):
    model, _, dtype = domain_model
    for index, frame in enumerate(frames):
        got = run(model, frame)
        assert got["atom_virial"].shape == (len(frame["pos"]), 3, 3)
        assert_matches(got["atom_virial"].sum(axis=0), got["virial"], dtype, f"frame {index}")


def test_integer_mask_gives_the_bool_results(domain_model, frames):
    model, _, _ = domain_model
    frame = frames[-1]
    expected = run(model, frame)
    for mask in (frame["local_mask"].astype(np.int32), frame["local_mask"].astype(np.int64) * 5):
        got = run(model, frame, local_mask=mask)
        # Not bitwise: the AOTI kernels' threaded sums differ run to run by ~1e-17 even for the
        # same mask; a mask read wrongly changes the energy by an atom's energy (~eV).
        assert got["total_energy"] == pytest.approx(expected["total_energy"], rel=0, abs=1e-12)
        np.testing.assert_allclose(got["forces"], expected["forces"], rtol=0, atol=1e-12)


def test_aotinductor_without_a_mask_counts_every_atom(compiled_models, frames):
    model = Model(str(compiled_models["float64", "aotinductor", "pair_nequip_domain"]))
    eager_model = compiled_models.eager["float64"]
    for index, frame in enumerate(frames):
        got, expected = run(model, frame, local_mask=None), eager_outputs(eager_model, frame)
        assert_matches(got["total_energy"], expected["total_energy"], "float64", f"frame {index}")
        assert_matches(got["forces"], expected["forces"], "float64", f"frame {index} forces")


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones(3, bool), "local_mask must have shape (N,) = (4,), got (3,)"),
        (np.ones((4, 1), bool), "local_mask must have shape (N,) = (4,), got (4, 1)"),
        (np.ones(4), "local_mask must be an array of bool or integers, got float64"),
    ],
)
def test_bad_local_mask(compiled_models, mask, message):
    model = Model(str(compiled_models["float64", "aotinductor", "pair_nequip_domain"]))
    pos = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5]])
    with raises(InputError, message):
        model.compute(pos, np.zeros(4, np.int64), np.zeros((2, 0), np.int64), local_mask=mask)


@pytest.mark.parametrize("target", ["pair_nequip", "ase"])
def test_local_mask_on_a_model_without_it(compiled_models, target):
    path = compiled_models["float64", "aotinductor", target]
    model = Model(str(path))
    message = (
        f"{path}: this model takes no local_mask (it counts the energy of every atom it is given); "
        "compile it with `nequip-compile ... --target pair_nequip_domain` (.pt2) or again with this "
        "version of nequip (.pth)"
    )
    with raises(InputError, message):
        model.compute(np.zeros((1, 3)), np.zeros(1, np.int64), np.zeros((2, 0), np.int64), local_mask=np.ones(1, bool))


def test_torchscript_file_without_field_lists_takes_and_gives_the_contract_fields(compiled_models, tmp_path):
    """Files of other producers (and older ones) lack nequip_torchscript_inputs/outputs: the
    runtime passes FILE_CONTRACT §3's five inputs and reads §3's five outputs."""
    from fixtures.edited_files import with_pth_metadata

    source = compiled_models["float64", "torchscript", None]
    path = with_pth_metadata(source, tmp_path / "a.nequip.pth", "nequip_torchscript_inputs", None)
    path = with_pth_metadata(path, tmp_path / "model.nequip.pth", "nequip_torchscript_outputs", None)
    model = Model(str(path))
    assert model.input_names == FIVE_INPUTS
    assert model.output_names == ["atomic_energy", "total_energy", "forces", "stress", "virial"]
    pos = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    edge_index = np.array([[0, 1], [1, 0]])
    assert "atom_virial" not in model.compute(pos, np.array([0, 1]), edge_index)
    with pytest.raises(InputError, match="this model takes no local_mask"):
        model.compute(pos, np.array([0, 1]), edge_index, local_mask=np.array([True, False]))


@pytest.mark.parametrize("value", ["0", "two", "2 2"])
def test_malformed_num_layers(compiled_models, tmp_path, value):
    from nequip._runtime import ModelFileError
    from fixtures.edited_files import with_pt2_metadata

    source = compiled_models["float64", "aotinductor", "pair_nequip_domain"]
    path = with_pt2_metadata(source, tmp_path / "model.nequip.pt2", "num_layers", value)
    message = f"{path}: metadata key 'num_layers' is malformed: expected a positive decimal integer, got '{value}'"
    with raises(ModelFileError, message):
        Model(str(path))
