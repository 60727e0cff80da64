"""Checkpoints (*.ckpt) and packages (*.nequip.zip) run as the eager model in
NequIPCalculator, and agree with the same model compiled for the C++ runtime."""

import numpy as np
import pytest
from ase.build import bulk

from ase_systems import eager_reference
from fixtures.training import TYPE_NAMES
from nequip.ase import NequIPCalculator
from nequip.compile import compile_model
from nequip.data import TypeMapper, from_ase
from nequip.package import build_package, load_model


@pytest.fixture(scope="module")
def trained(trained_run, tmp_path_factory):
    """The test session's tiny training run (float64): its checkpoint and its package."""
    checkpoint = trained_run / "last.ckpt"
    package = tmp_path_factory.mktemp("ase_eager") / "model.nequip.zip"
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
