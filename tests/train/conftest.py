"""Session fixtures of the training tests: EMT-labelled Cu/Au data and one short training run."""

from pathlib import Path

import pytest

from nequip.train import train, validate_config

from .helpers import config_dict, make_emt_data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Ten 8-atom Cu/Au frames labelled by EMT."""
    path = tmp_path_factory.mktemp("data") / "tiny.xyz"
    make_emt_data().write_emt_data(path, n_frames=10, seed=0, repeat=(1, 1, 2))
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """Output directory of a two-epoch run of a tiny model with EMA (best.ckpt, last.ckpt, logs)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    train(validate_config(config_dict(tiny_data, output_dir, max_epochs=2)))
    return output_dir
