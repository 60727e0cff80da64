"""Every way of misusing the runtime gives one exception with one clear message: bad files,
missing or malformed metadata, wrong devices, bad inputs."""

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nequip._runtime import DeviceError, InputError, Model, ModelFileError

PTH = ("float64", "torchscript", None)
PT2 = ("float64", "aotinductor", "pair_nequip")


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


def rewrite_zip(source: Path, destination: Path, edit, add=None) -> Path:
    """Copy the zip archive ``source`` to ``destination``, passing each entry through
    ``edit(name, data) -> data``, or None to leave the entry out; then ``add(prefix)``
    returns {name: data} of entries to add under the archive's top directory."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(destination, "w") as new:
        for item in old.infolist():
            data = edit(item.filename, old.read(item.filename))
            if data is not None:
                new.writestr(item, data)
        prefix = old.namelist()[0].split("/")[0]
        for name, data in (add(prefix) if add else {}).items():
            new.writestr(name, data)
    return destination


def with_pth_metadata(source: Path, destination: Path, key: str, value) -> Path:
    """A TorchScript file whose extra file ``key`` is ``value`` (None: removed)."""
    with zipfile.ZipFile(source) as archive:
        present = any(name.endswith(f"/extra/{key}") for name in archive.namelist())

    def edit(name, data):
        return (None if value is None else value.encode()) if name.endswith(f"/extra/{key}") else data

    def add(prefix):
        return {} if present or value is None else {f"{prefix}/extra/{key}": value.encode()}

    return rewrite_zip(source, destination, edit, add)


def with_pt2_metadata(source: Path, destination: Path, key: str, value) -> Path:
    """An AOTInductor package whose metadata ``key`` is ``value`` (None: removed)."""

    def edit(name, data):
        if not name.endswith("_metadata.json"):
            return data
        metadata = json.loads(data)
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
        return json.dumps(metadata).encode()

    return rewrite_zip(source, destination, edit)


# -- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.nequip.pth"
    with raises(ModelFileError, f"{path}: no such file"):
        Model(str(path))


def test_unknown_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with raises(ModelFileError, f"{path}: unknown model file extension: expected .nequip.pth (TorchScript) or .nequip.pt2 (AOTInductor)"):
        Model(str(path))


@pytest.mark.parametrize("suffix", [".nequip.pth", ".nequip.pt2"])
def test_file_that_is_not_a_zip_archive(tmp_path, suffix):
    path = tmp_path / f"text{suffix}"
    path.write_text("r_max: 4.0\n")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        Model(str(path))


def test_zip_archive_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.nequip.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other/data.txt", "hello")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        Model(str(path))


def test_torchscript_file_named_pt2(compiled_models, tmp_path):
    path = tmp_path / "renamed.nequip.pt2"
    shutil.copy(compiled_models[PTH], path)
    message = f"{path}: the file name says an AOTInductor package (.nequip.pt2) but the file is a TorchScript archive (.nequip.pth)"
    with raises(ModelFileError, message):
        Model(str(path))


def test_aotinductor_file_named_pth(compiled_models, tmp_path):
    path = tmp_path / "renamed.nequip.pth"
    shutil.copy(compiled_models[PT2], path)
    message = f"{path}: the file name says a TorchScript archive (.nequip.pth) but the file is an AOTInductor package (.nequip.pt2)"
    with raises(ModelFileError, message):
        Model(str(path))


# -- metadata ------------------------------------------------------------------------------

REQUIRED_KEYS = ["model_dtype", "type_names", "num_types", "r_max", "allow_tf32"]
MALFORMED = [
    ("model_dtype", "float16", "'float32' or 'float64'"),
    ("num_types", "two", "a positive decimal integer"),
    ("num_types", "0", "a positive decimal integer"),
    ("type_names", "Si", "2 space-separated names (num_types)"),
    ("type_names", "Si Si", "distinct names"),
    ("r_max", "-1.0", "a positive decimal float"),
    ("r_max", "nan", "a positive decimal float"),
    ("per_edge_type_cutoff", "4.0 3.5 3.5", "4 (num_types squared) floats in (0, r_max]"),
    ("per_edge_type_cutoff", "4.0 3.5 3.5 4.5", "4 (num_types squared) floats in (0, r_max]"),
    ("allow_tf32", "yes", "'0' or '1'"),
]


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_torchscript_without_a_required_key(compiled_models, tmp_path, key):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", key, None)
    with raises(ModelFileError, f"{path}: required metadata key '{key}' is missing"):
        Model(str(path))


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_aotinductor_without_a_required_key(compiled_models, tmp_path, key):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", key, None)
    with raises(ModelFileError, f"{path}: required metadata key '{key}' is missing"):
        Model(str(path))


@pytest.mark.parametrize("key, value, expected", MALFORMED)
def test_torchscript_with_a_malformed_key(compiled_models, tmp_path, key, value, expected):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", key, value)
    with raises(ModelFileError, f"{path}: metadata key '{key}' is malformed: expected {expected}, got '{value}'"):
        Model(str(path))


@pytest.mark.parametrize("key, value, expected", MALFORMED)
def test_aotinductor_with_a_malformed_key(compiled_models, tmp_path, key, value, expected):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", key, value)
    with raises(ModelFileError, f"{path}: metadata key '{key}' is malformed: expected {expected}, got '{value}'"):
        Model(str(path))


def test_aotinductor_with_unknown_output_names(compiled_models, tmp_path):
    value = "atomic_energy forces energy"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "nequip_aoti_outputs", value)
    message = (
        f"{path}: metadata key 'nequip_aoti_outputs' is malformed: expected distinct names from "
        f"'atomic_energy total_energy forces stress virial atom_virial' including 'atomic_energy forces', "
        f"got '{value}'"
    )
    with raises(ModelFileError, message):
        Model(str(path))


def test_files_of_older_producers_use_the_pair_nequip_order(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "a.nequip.pt2", "nequip_aoti_outputs", None)
    path = with_pt2_metadata(path, tmp_path / "model.nequip.pt2", "nequip_aoti_inputs", None)
    assert Model(str(path)).output_names == ["atomic_energy", "forces", "virial"]


# -- devices -------------------------------------------------------------------------------


def test_aotinductor_compiled_for_another_device(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "AOTI_DEVICE_KEY", "cuda")
    with raises(DeviceError, f"{path}: compiled for device 'cuda', cannot run on device 'cpu'; compile it again for 'cpu'"):
        Model(str(path), "cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:1", "mps"])
def test_invalid_device(compiled_models, device):
    with raises(DeviceError, f"invalid device '{device}': expected 'cpu', 'cuda' or 'cuda:<index>'"):
        Model(str(compiled_models[PTH]), device)


def test_cuda_device_that_does_not_exist(compiled_models):
    count = torch.cuda.device_count()
    device = f"cuda:{count}"
    if count == 0:
        message = f"device '{device}' requested but CUDA is not available to torch"
    else:
        message = f"device '{device}' requested but only {count} CUDA device(s) are visible"
    with raises(DeviceError, message):
        Model(str(compiled_models[PTH]), device)


# -- inputs --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["pth", "pt2"])
def model(request, compiled_models):
    return Model(str(compiled_models[{"pth": PTH, "pt2": PT2}[request.param]]))


def good_inputs():
    """Four atoms in a 5 Å cube, a few edges."""
    rng = np.random.default_rng(0)
    return dict(
        pos=rng.uniform(0.0, 5.0, (4, 3)),
        atom_types=np.array([0, 1, 0, 1]),
        edge_index=np.array([[0, 1, 2, 3], [1, 0, 3, 2]]),
        edge_cell_shift=np.zeros((4, 3)),
        cell=5.0 * np.eye(3),
    )


BAD_INPUTS = [
    ("pos", np.zeros((4, 2)), "pos must have shape (N, 3), got (4, 2)"),
    ("pos", np.full((4, 3), np.nan), "pos contains non-finite values (NaN or infinity)"),
    ("pos", np.zeros((4, 3), dtype=bool), "pos must be an array of float64, float32, int64 or int32, got bool"),
    ("atom_types", np.array([0, 1, 0]), "atom_types must have shape (N,) = (4,), got (3,)"),
    ("atom_types", np.array([0.0, 1.0, 0.0, 1.0]), "atom_types must have an integer dtype, got float64"),
    ("atom_types", np.array([0, 1, 0, 2]), "atom_types values must lie in [0, num_types) = [0, 2), got values in [0, 2]"),
    ("edge_index", np.zeros((3, 4), dtype=np.int64), "edge_index must have shape (2, E), got (3, 4)"),
    ("edge_index", np.array([[0, 1, 2, 3], [1, 0, 3, 4]]), "edge_index values must lie in [0, N) = [0, 4), got values in [0, 4]"),
    ("edge_index", np.array([[0, 1, 2, -3], [1, 0, 3, 2]]), "edge_index values must lie in [0, N) = [0, 4), got values in [-3, 3]"),
    ("edge_cell_shift", np.zeros((3, 3)), "edge_cell_shift must have shape (E, 3) = (4, 3), got (3, 3)"),
    ("cell", np.eye(3).reshape(9), "cell must have shape (3, 3) or (1, 3, 3), got (9,)"),
    ("cell", np.full((3, 3), np.inf), "cell contains non-finite values (NaN or infinity)"),
]


@pytest.mark.parametrize("name, value, message", BAD_INPUTS, ids=[m.split(" ")[0] + str(i) for i, (_, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input(model, name, value, message):
    inputs = good_inputs()
    inputs[name] = value
    with raises(InputError, message):
        model.compute(**inputs)


def test_no_atoms(model):
    with raises(InputError, "pos must hold at least one atom, got shape (0, 3)"):
        model.compute(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros((2, 0), dtype=np.int64))


def test_input_errors_are_value_errors_and_leave_the_model_usable(model):
    with pytest.raises(ValueError):
        model.compute(**dict(good_inputs(), pos=np.zeros((4, 2))))
    assert np.isfinite(model.compute(**good_inputs())["total_energy"])
