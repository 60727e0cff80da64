"""NequIPCalculator refuses bad files and bad structures with one clear message each."""

import re
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from ase_systems import sic_cluster, sic_triclinic
from fixtures.edited_files import with_pt2_metadata
from nequip._runtime import DeviceError, ModelFileError
from nequip.ase import NequIPCalculator
from nequip.data import DenseCellWarning

PT2 = ("float64", "aotinductor", "ase")


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


@pytest.fixture(scope="module")
def calculator(compiled_models):
    return NequIPCalculator(compiled_models[PT2])


def test_species_not_in_the_model(calculator):
    atoms = Atoms("SiOCN", positions=np.arange(12.0).reshape(4, 3))
    atoms.calc = calculator
    with raises(ValueError, "species N, O not in the model: its types are Si, C; map species to types with species_to_type_map"):
        atoms.get_potential_energy()


def test_file_that_is_no_model_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("r_max: 4.0\n")
    message = (
        f"{path}: cannot tell the kind of model file from its name: expected a checkpoint ('.ckpt'), "
        "a package ('.nequip.zip') or a compiled model ('.nequip.pth', '.nequip.pt2')"
    )
    with raises(ValueError, message):
        NequIPCalculator(path)


def test_compiled_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "model.nequip.pth"
    path.write_text("r_max: 4.0\n")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        NequIPCalculator(path)


def test_pt2_compiled_for_another_device(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "cuda.nequip.pt2", "AOTI_DEVICE_KEY", "cuda")
    with raises(DeviceError, f"{path}: compiled for device 'cuda', cannot run on device 'cpu'; compile it again for 'cpu' (nequip-compile ... --device cpu)"):
        NequIPCalculator(path, device="cpu")


def test_nan_positions(calculator):
    atoms = sic_triclinic()
    atoms.positions[3, 1] = np.nan
    atoms.calc = calculator
    with raises(ValueError, "the Atoms object has NaN or infinite positions"):
        atoms.get_forces()


def test_empty_atoms(calculator):
    atoms = Atoms(cell=5.0 * np.eye(3), pbc=True)
    atoms.calc = calculator
    with raises(ValueError, "the Atoms object has no atoms: nothing to compute"):
        atoms.get_potential_energy()


def test_stress_of_a_non_periodic_system(calculator):
    atoms = sic_cluster()
    atoms.calc = calculator
    assert np.isfinite(atoms.get_potential_energy())
    with raises(PropertyNotImplementedError, "stress is not available: the system is not periodic"):
        atoms.get_stress()


@pytest.mark.parametrize(
    "cell, pbc, lengths",
    [
        (np.zeros((3, 3)), True, "0, 0, 0"),
        (np.diag([5.0, 5.0, 0.0]), True, "5, 5, 0"),
        ([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 4.0]], [True, True, False], "4, 8, 4"),
    ],
)
def test_periodic_axes_without_volume(calculator, cell, pbc, lengths):
    atoms = Atoms("SiC", positions=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], cell=cell, pbc=pbc)
    atoms.calc = calculator
    message = (
        f"the cell has no volume along its periodic axes (pbc={atoms.pbc.tolist()}, cell lengths {lengths} A): "
        "set the cell (atoms.set_cell), or set pbc=False along the axes that are not periodic"
    )
    with raises(ValueError, message):
        atoms.get_potential_energy()


def test_slab_with_a_zero_vector_along_its_open_axis(calculator):
    atoms = Atoms("SiC", positions=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], cell=np.diag([6.0, 6.0, 0.0]), pbc=[True, True, False])
    atoms.calc = calculator
    assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("name", ["m.nequip.zip", "last.ckpt"])
def test_eager_model_on_cuda_without_cuda(tmp_path, name):
    message = (
        "device 'cuda' requested, but CUDA is not available to torch: use device 'cpu', or a CUDA build of torch "
        "on a machine with a GPU"
    )
    with raises(ValueError, message):
        NequIPCalculator(tmp_path / name, device="cuda")


def test_eager_model_on_an_unknown_device(tmp_path):
    with raises(ValueError, "invalid device 'tpu': expected 'cpu', 'cuda' or 'cuda:<index>'"):
        NequIPCalculator(tmp_path / "m.nequip.zip", device="tpu")


def test_cell_too_small_warns_once_per_calculator_as_it_changes(compiled_models):
    """Under NPT a cell in the wrong units changes every step, and with it the warning's numbers:
    one warning per calculator, not one per step."""
    warned = []
    for _ in range(2):
        calculator = NequIPCalculator(compiled_models[PT2])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            for scale in (1.0, 1.01, 1.02):
                atoms = Atoms("SiC", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * scale, pbc=True)
                atoms.calc = calculator
                atoms.get_potential_energy()
        warned.append([str(w.message) for w in caught if issubclass(w.category, DenseCellWarning)])
    for messages in warned:
        assert len(messages) == 1
        assert messages[0].startswith("the periodic cell looks too small for its 2 atoms: cell lengths 1, 1, 1 Å")
