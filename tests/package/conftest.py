"""Session fixtures of the package tests: one tiny training run, its package, a re-package.

Packages are built from real ``nequip-train`` checkpoints (EMT-labelled Cu/Au data, a model
small enough to train for two epochs in seconds), once per test session.
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from nequip.data import TypeMapper, from_ase, read_frames
from nequip.package import ModelFromCheckpoint, build_package

from .helpers import R_MAX, REPO, TINY_MODEL, TYPE_NAMES, predictions, run_nequip_train, training_config


@pytest.fixture(scope="session")
def emt_data(tmp_path_factory) -> Path:
    """Six EMT-labelled 4-atom Cu/Au fcc frames (periodic)."""
    path = tmp_path_factory.mktemp("data") / "emt.xyz"
    script = REPO / "examples" / "make_emt_data.py"
    subprocess.run(
        [sys.executable, str(script), str(path), "--frames", "6", "--repeat", "1", "1", "1"], check=True, capture_output=True
    )
    return path


@pytest.fixture(scope="session")
def checkpoint_path(emt_data, tmp_path_factory) -> Path:
    """``last.ckpt`` of a two-epoch run with EMA of a tiny model."""
    run = tmp_path_factory.mktemp("run")
    return run_nequip_train(training_config(emt_data, run / "out", **TINY_MODEL), run)


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
