"""Checkpoints (*.ckpt) and packages (*.nequip.zip) run as the eager model in
NequIPCalculator, and agree with the same model compiled for the C++ runtime."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk

from ase_systems import eager_reference
from nequip.ase import NequIPCalculator
from nequip.compile import compile_model
from nequip.data import TypeMapper, from_ase
from nequip.package import build_package, load_model

REPO = Path(__file__).resolve().parents[2]
TYPE_NAMES = ["Cu", "Au"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch nequip-train run of a tiny float64 model on EMT Cu/Au data: its
    checkpoint and its package."""
    directory = tmp_path_factory.mktemp("ase_eager")
    data = directory / "emt.xyz"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "make_emt_data.py"), str(data), "--frames", "6", "--repeat", "1", "1", "1"],
        check=True,
        capture_output=True,
    )
    config = {
        "output_dir": str(directory / "run"),
        "data": {"type_names": TYPE_NAMES, "file": str(data), "split": {"train": 4, "val": 2}, "batch_size": 2},
        "model": dict(r_max=4.0, l_max=1, num_layers=2, num_features=4, num_bessels=4, radial_mlp_depth=1,
                      radial_mlp_width=8, model_dtype="float64"),
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "nequip.scripts.train", str(config_path)], capture_output=True, text=True)
    assert result.returncode == 0, f"nequip-train failed:\n{result.stdout}\n{result.stderr}"
    checkpoint = directory / "run" / "last.ckpt"
    package = directory / "model.nequip.zip"
    build_package(checkpoint, package)
    return {"ckpt": checkpoint, "package": package}


def cu_au():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 4, 6]] = "Au"
    atoms.rattle(0.05, seed=7)
    return atoms


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ckpt", "package"])
def test_eager_file_equals_its_model(trained, kind):
    path = trained[kind]
    atoms = cu_au()
    expected = eager_reference(load_model(path), atoms)
    atoms.calc = NequIPCalculator(path)
    np.testing.assert_allclose(atoms.get_potential_energy(), expected["energy"], rtol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), expected["stress"], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_package_equals_its_compiled_file(trained, tmp_path):
    model = load_model(trained["package"])
    atoms = cu_au()
    example = from_ase(atoms, TypeMapper(TYPE_NAMES), model.r_max, labels=())
    compiled = compile_model(model, tmp_path / "model.nequip.pth", mode="torchscript", example_data=example)
    eager, runtime = atoms.copy(), atoms.copy()
    eager.calc, runtime.calc = NequIPCalculator(trained["package"]), NequIPCalculator(compiled)
    np.testing.assert_allclose(runtime.get_potential_energy(), eager.get_potential_energy(), rtol=1e-10)
    np.testing.assert_allclose(runtime.get_forces(), eager.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(runtime.get_stress(), eager.get_stress(), rtol=0, atol=1e-10)
