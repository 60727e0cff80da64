"""Session fixtures of the package tests: the shared training run's package, a re-package.

Packages are built from the checkpoint of the test session's one tiny training run
(tests/fixtures/training.py: EMT-labelled Cu/Au data, a float64 model trained for two epochs).
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from fixtures.training import R_MAX, TYPE_NAMES
from nequip.data import TypeMapper, from_ase, read_frames
from nequip.package import ModelFromCheckpoint, build_package

from .helpers import predictions


@pytest.fixture(scope="session")
def emt_data(tiny_data) -> Path:
    """The shared run's data: ten EMT-labelled 8-atom Cu/Au frames (periodic)."""
    return tiny_data


@pytest.fixture(scope="session")
def checkpoint_path(trained_run) -> Path:
    """``last.ckpt`` of the shared run (two epochs, EMA)."""
    return trained_run / "last.ckpt"


@pytest.fixture(scope="session")
def package_path(checkpoint_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("package") / "model.nequip.zip"
    build_package(checkpoint_path, path)
    return path


@pytest.fixture(scope="session")
def repackaged_path(package_path, tmp_path_factory) -> Path:
    """A package built from ``package_path`` by the ``nequip-package build`` command."""
    path = tmp_path_factory.mktemp("repackage") / "again.nequip.zip"
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.package", "build", str(package_path), str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {path} (format version 2, variants: default, types: Cu Au) in ")
    return path


@pytest.fixture(scope="session")
def frames(emt_data) -> List[Dict[str, torch.Tensor]]:
    """Frames to compare predictions on: training frames, a 32-atom supercell, a non-periodic cluster."""
    atoms = read_frames(emt_data)
    cluster = atoms[0].copy()
    cluster.pbc = False
    mapper = TypeMapper(TYPE_NAMES)
    return [from_ase(a, mapper, R_MAX, labels=()) for a in atoms[:2] + [atoms[2].repeat(2), cluster]]


@pytest.fixture(scope="session")
def checkpoint_predictions(checkpoint_path, frames) -> List[Dict[str, torch.Tensor]]:
    """The checkpoint's model's outputs on ``frames``: what every package must reproduce."""
    return predictions(ModelFromCheckpoint(checkpoint_path), frames)
