"""open_model: every kind of model file opened the same way, giving the same outputs and the
same errors for the same faults (issue: one opener; never silently wrong)."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from fixtures.compiled import build_tiny_model, example_frame
from fixtures.model_files import write_checkpoint
from nequip import _runtime
from nequip.ase import NequIPCalculator
from nequip.compile import TOLERANCE, relative_error
from nequip.data import keys
from nequip.inference import open_model
from nequip.inference.compiled import CompiledModel
from nequip.inference.eager import EagerModel
from nequip.load import ModelFileError

# (model_dtype, file kind) -> how to get the file from the session fixtures
FILES = {
    "checkpoint": lambda compiled, files, dtype: files[dtype, "checkpoint"],
    "package": lambda compiled, files, dtype: files[dtype, "package"],
    "pth": lambda compiled, files, dtype: compiled[dtype, "torchscript", None],
    "pt2-ase": lambda compiled, files, dtype: compiled[dtype, "aotinductor", "ase"],
    "pt2-pair_nequip": lambda compiled, files, dtype: compiled[dtype, "aotinductor", "pair_nequip"],
    "pt2-batch": lambda compiled, files, dtype: compiled[dtype, "aotinductor", "batch"],
}


@pytest.fixture(params=list(FILES), ids=list(FILES))
def opened(request, compiled_models, model_files):
    return open_model(FILES[request.param](compiled_models, model_files, "float64"))


def non_periodic(frame):
    return {key: frame[key] for key in (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX)}


def test_open_model_picks_the_runtime_for_compiled_files_and_torch_for_trained_ones(compiled_models, model_files):
    assert type(open_model(compiled_models["float64", "torchscript", None])) is CompiledModel
    assert type(open_model(compiled_models["float64", "aotinductor", "ase"])) is CompiledModel
    assert type(open_model(model_files["float64", "checkpoint"])) is EagerModel
    assert type(open_model(model_files["float64", "package"])) is EagerModel


def test_every_kind_of_file_gives_the_eager_models_outputs(opened, compiled_models):
    eager = compiled_models.eager["float64"]
    frame = example_frame()
    expected = eager(dict(frame))
    out = opened(frame)
    assert set(out) >= {keys.TOTAL_ENERGY, keys.ATOMIC_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL}
    for name in (keys.TOTAL_ENERGY, keys.ATOMIC_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL):
        assert out[name].dtype == torch.float64 and out[name].shape == expected[name].shape, name
        assert relative_error(out[name], expected[name]) <= TOLERANCE["float64"], name
    assert opened.type_names == ("Si", "C") and opened.r_max == 4.0 and opened.gives_stress


def test_a_frame_without_a_cell_has_no_stress_on_any_kind_of_file(opened):
    out = opened(non_periodic(example_frame()))
    assert keys.STRESS not in out
    assert torch.isfinite(out[keys.FORCES]).all()


def test_evaluating_frames_together_equals_one_by_one(opened):
    frames = [example_frame(), non_periodic(example_frame()), example_frame()]
    together = opened.evaluate(frames, batch_size=3)
    for frame, out in zip(frames, together):
        alone = opened(frame)
        assert set(out) == set(alone)
        for name in out:
            assert relative_error(out[name], alone[name]) <= 1e-12, name


class CountingRuntime:
    """The runtime of a CompiledModel, counting its calls by kind."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.calls = {"compute": 0, "compute_batch": 0}

    def __getattr__(self, name):
        if name in self.calls:
            self.calls[name] += 1
        return getattr(self.runtime, name)


@pytest.mark.parametrize("kind", ["pt2-batch", "pth"])
def test_a_file_that_takes_batches_evaluates_batch_size_frames_per_runtime_call(kind, compiled_models, model_files):
    opened = open_model(FILES[kind](compiled_models, model_files, "float64"))
    assert opened.takes_batches
    frames = [example_frame(), non_periodic(example_frame())] * 3 + [example_frame()]
    alone = [opened(frame) for frame in frames]
    opened.runtime = counting = CountingRuntime(opened.runtime)
    together = opened.evaluate(frames, batch_size=3)
    assert counting.calls == {"compute": 0, "compute_batch": 3}  # 3 + 3 + 1 frames
    for index, (out, expected) in enumerate(zip(together, alone)):
        assert set(out) == set(expected), index
        for name in out:
            assert relative_error(out[name], expected[name]) <= 1e-12, (index, name)


def test_a_file_of_one_frame_per_call_evaluates_frame_by_frame(compiled_models):
    opened = open_model(compiled_models["float64", "aotinductor", "ase"])
    assert not opened.takes_batches
    opened.runtime = counting = CountingRuntime(opened.runtime)
    opened.evaluate([example_frame()] * 3, batch_size=3)
    assert counting.calls == {"compute": 3, "compute_batch": 0}


def test_per_edge_type_cutoffs_come_from_the_model_on_every_kind(compiled_models, model_files):
    cutoffs = {
        kind: open_model(FILES[kind](compiled_models, model_files, "float32")).per_edge_type_cutoff
        for kind in ("checkpoint", "package", "pt2-ase")
    }
    for kind, matrix in cutoffs.items():
        np.testing.assert_array_equal(matrix, [[4.0, 3.5], [3.5, 3.0]], err_msg=kind)
    assert open_model(model_files["float64", "package"]).per_edge_type_cutoff is None


def overlapping_atoms():
    """Atoms 1 and 2 at the same position: the model's energy is NaN."""
    pos = torch.tensor([[1.0, 1.0, 1.0], [2.5, 1.0, 1.0], [2.5, 1.0, 1.0]], dtype=torch.float64)
    return {
        keys.POS: pos,
        keys.ATOM_TYPES: torch.tensor([0, 1, 0]),
        keys.EDGE_INDEX: torch.tensor([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]]),
        keys.CELL: 5.0 * torch.eye(3, dtype=torch.float64).reshape(1, 3, 3),
        keys.EDGE_CELL_SHIFT: torch.zeros((6, 3), dtype=torch.float64),
    }


def test_overlapping_atoms_raise_the_same_error_on_every_kind_of_file(opened):
    message = (
        f"{opened.path}: the model gave a non-finite energy or forces (NaN or infinity): atoms 1 and 2 are "
        "0 Å apart (closer than 0.1 * r_max = 0.4 Å); overlapping atoms are the likely cause: check the structure"
    )
    with pytest.raises(_runtime.NonFiniteOutputError, match=f"^{re.escape(message)}$"):
        opened(overlapping_atoms())


def test_the_calculator_on_a_package_refuses_overlapping_atoms_as_on_a_pt2(compiled_models, model_files):
    atoms = Atoms("SiCSi", positions=[[1.0, 1.0, 1.0], [2.5, 1.0, 1.0], [2.5, 1.0, 1.0]], cell=[5.0] * 3, pbc=True)
    errors = []
    for path in (model_files["float64", "package"], compiled_models["float64", "aotinductor", "ase"]):
        atoms.calc = NequIPCalculator(path)
        with pytest.raises(_runtime.NonFiniteOutputError) as error:
            atoms.get_potential_energy()
        errors.append(str(error.value).replace(str(path), "<file>"))
    assert errors[0] == errors[1]
    assert "atoms 1 and 2 are 0 Å apart" in errors[0]


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> Path:
    model = build_tiny_model("float64")
    with torch.no_grad():
        model.per_type_energy_shifts[1] = float("nan")
    return write_checkpoint(model, tmp_path_factory.mktemp("nan") / "nan.ckpt")


def nan_weights_message(path) -> str:
    return (
        f"{path}: the model's weights are not finite (NaN or infinite): per_type_energy_shifts; its every "
        "prediction would be NaN. Use a checkpoint saved before training diverged (e.g. best.ckpt), or retrain "
        "from finite data"
    )


def test_a_checkpoint_with_nan_weights_is_refused_when_opened(nan_checkpoint):
    with pytest.raises(ModelFileError, match=f"^{re.escape(nan_weights_message(nan_checkpoint))}$"):
        open_model(nan_checkpoint)
    with pytest.raises(ModelFileError, match=re.escape(nan_weights_message(nan_checkpoint))):
        NequIPCalculator(nan_checkpoint)


def test_nequip_test_refuses_nan_weights_and_writes_nothing(nan_checkpoint, tmp_path):
    data = tmp_path / "sic.xyz"
    atoms = Atoms("SiC", positions=[[0, 0, 0], [1.5, 0, 0]], cell=[6.0] * 3, pbc=True)
    atoms.info["energy"] = 1.0
    atoms.write(data)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.evaluate", str(nan_checkpoint), str(data), "--output", str(output)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == f"nequip-test: error: {nan_weights_message(nan_checkpoint)}\n"
    assert not output.exists()


def test_nequip_test_on_unknown_species_says_what_it_can_do(model_files, tmp_path):
    data = tmp_path / "cu.xyz"
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.0, 0, 0]], cell=[6.0] * 3, pbc=True)
    atoms.info["energy"] = 1.0
    atoms.write(data)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.evaluate", str(model_files["float64", "package"]), str(data),
         "--output", str(output)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"nequip-test: error: {data}: frame 0: unknown species Cu: the model's types are ['Si', 'C']; the model "
        "cannot predict for them: test frames of its species only (select them with --index)\n"
    )
    assert not output.exists()


@pytest.mark.parametrize(
    "argument, message",
    [
        ("directory", "{path}: a directory, not a model file; give the file itself (a checkpoint ('.ckpt') or a "
         "package ('.nequip.zip'))"),
        ("pth", "{path}: a compiled model (.nequip.pth), which only the C++ runtime runs: give the package "
         "('.nequip.zip') or checkpoint ('.ckpt') it was compiled from"),
    ],
)
def test_nequip_compile_names_what_its_input_is(argument, message, compiled_models, tmp_path):
    path = {
        "directory": tmp_path,
        "pth": compiled_models["float64", "torchscript", None],
    }[argument]
    out = tmp_path / "out.nequip.pth"
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.compile", str(path), str(out), "--mode", "torchscript"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == f"nequip-compile: error: {message.format(path=path)}\n"
    assert not out.exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"energy_units_to_eV": "kcal"}, "energy_units_to_eV must be a positive number, how many eV one unit of "
         "the model is (e.g. 0.0433641 for kcal/mol), got 'kcal'"),
        ({"length_units_to_A": -1.0}, "length_units_to_A must be a positive number, how many Å one unit of the "
         "model is (e.g. 0.529177 for bohr), got -1.0"),
        ({"device": 0}, "device must be a name such as 'cpu', 'cuda' or 'cuda:1', got 0 (int)"),
    ],
)
def test_calculator_arguments_of_the_wrong_kind_are_named(arguments, message, compiled_models):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        NequIPCalculator(compiled_models["float64", "aotinductor", "ase"], **arguments)


def close_atoms(distance: float):
    """An Si-C pair ``distance`` apart, alone in a large box."""
    frame = overlapping_atoms()
    frame[keys.POS] = torch.tensor([[1.0, 1.0, 1.0], [1.0 + distance, 1.0, 1.0]], dtype=torch.float64)
    frame[keys.ATOM_TYPES] = torch.tensor([0, 1])
    frame[keys.EDGE_INDEX] = torch.tensor([[0, 1], [1, 0]])
    frame[keys.EDGE_CELL_SHIFT] = torch.zeros((2, 3), dtype=torch.float64)
    frame[keys.CELL] = 20.0 * torch.eye(3, dtype=torch.float64).reshape(1, 3, 3)
    return frame


def test_an_eager_model_warns_once_of_atoms_closer_than_it_can_be_trusted(model_files):
    model = open_model(model_files["float64", "package"])
    message = (
        f"{model.path}: atoms 0 and 1 are 0.3 Å apart, closer than 0.1 * r_max = 0.4 Å: the model extrapolates "
        "there and its energy and forces may be far off; check the structure (this warning is given once per model)"
    )
    with pytest.warns(_runtime.CloseAtomsWarning, match=f"^{re.escape(message)}$"):
        out = model(close_atoms(0.3))
    assert torch.isfinite(out[keys.TOTAL_ENERGY]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(close_atoms(0.2))
        open_model(model_files["float64", "package"])(close_atoms(1.5))


def test_the_closest_training_pair_of_the_metadata_is_the_threshold_when_recorded():
    frame = close_atoms(1.2)
    arrays = [frame[key].numpy() for key in (keys.POS, keys.EDGE_INDEX, keys.EDGE_CELL_SHIFT)]
    metadata = {"r_max": "4.0", "closest_training_pair": "1.5"}
    message = _runtime.close_pair_warning("m.nequip.zip", metadata, *arrays, frame[keys.CELL].numpy().reshape(3, 3))
    assert message == (
        "m.nequip.zip: atoms 0 and 1 are 1.2 Å apart, closer than the closest pair the model was trained on, 1.5 Å: "
        "the model extrapolates there and its energy and forces may be far off; check the structure (this warning "
        "is given once per model)"
    )
    assert _runtime.close_pair_warning("m.nequip.zip", {"r_max": "4.0"}, *arrays, None) is None
    with pytest.raises(_runtime.ModelFileError, match="'closest_training_pair' is malformed"):
        _runtime.close_pair_warning("m.nequip.zip", dict(metadata, closest_training_pair="x"), *arrays, None)
