"""Fine-tuning a model of the other NequIP release with our trainer (``model.from_package``):
losses, EMA, checkpoints and resume; the result packages (in that release's format, with its
code) and compiles."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from nequip.inference import open_model
from nequip.load import (
    OTHER_RELEASE_PACKAGE,
    CheckpointError,
    ModelFromCheckpoint,
    load_checkpoint,
    load_model,
    read_package_metadata,
)
from nequip.package import build_package, load_example_data
from nequip.package.checkpoint import read_checkpoint
from nequip.scripts.compile import main as nequip_compile

REPO = Path(__file__).resolve().parents[2]


def train(config: dict, directory: Path) -> subprocess.CompletedProcess:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "nequip.scripts.train", str(path)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def fine_tuned(foreign, tmp_path_factory):
    """Two epochs from their float64 package on EMT Cu/Au frames, then one more by resuming."""
    directory = tmp_path_factory.mktemp("fine_tune")
    data = directory / "emt.xyz"
    subprocess.run([sys.executable, str(REPO / "examples" / "make_emt_data.py"), str(data), "--frames", "6",
                    "--repeat", "1", "1", "1"], check=True, capture_output=True)  # fmt: skip
    config = {
        "output_dir": str(directory / "run"),
        "data": {"file": str(data), "split": {"train": 4, "val": 2}, "batch_size": 2},
        "model": {"from_package": str(foreign.package("float64"))},
        "ema": {"decay": 0.9},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    first = train(config, directory)
    assert first.returncode == 0, first.stderr
    config["trainer"]["max_epochs"] = 3
    resumed = train(config, directory)
    assert resumed.returncode == 0, resumed.stderr
    return directory / "run", first.stdout + first.stderr, resumed.stdout + resumed.stderr


def test_training_starts_from_their_model_and_resumes(fine_tuned):
    run, first, resumed = fine_tuned
    assert "fine-tuning from validation loss" in first
    assert "epoch 2/2" in first and "resuming from" in resumed and "epoch 3/3" in resumed
    checkpoint = read_checkpoint(run / "last.ckpt")
    assert checkpoint.weights == "ema"
    assert type(checkpoint.model).__name__ == "EcosystemModel"


def test_training_changed_their_weights(foreign, fine_tuned):
    run, _, _ = fine_tuned
    before = load_model(foreign.package("float64")).state_dict()
    after = read_checkpoint(run / "best.ckpt").model.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[key], after[key]) for key in before if before[key].is_floating_point())


def test_the_result_packages_in_their_format_and_compiles(fine_tuned, tmp_path):
    run, _, _ = fine_tuned
    package = tmp_path / "fine_tuned.nequip.zip"
    metadata = build_package(run / "best.ckpt", package)
    assert metadata["package_version_id"] == 2 and metadata["available_models"] == ["eager"]
    assert read_package_metadata(package)["versions"]["nequip"] == "0.19.1"
    with zipfile.ZipFile(package) as archive:
        assert any(name.endswith("/nequip/nn/graph_model.py") for name in archive.namelist())
    frame = load_example_data(package)
    expected = read_checkpoint(run / "best.ckpt").model(dict(frame))
    packaged = load_model(package)(dict(frame))
    torch.testing.assert_close(packaged["forces"], expected["forces"], rtol=0, atol=1e-12)
    compiled = tmp_path / "fine_tuned.nequip.pth"
    assert nequip_compile([str(package), str(compiled), "--mode", "torchscript"]) == 0
    out = open_model(compiled)(frame)
    torch.testing.assert_close(out["forces"], expected["forces"].detach(), rtol=0, atol=1e-10)


def test_a_checkpoint_whose_package_moved_names_it_and_the_way_out(fine_tuned, tmp_path):
    run, _, _ = fine_tuned
    checkpoint = load_checkpoint(run / "best.ckpt")
    moved = tmp_path / "moved" / "cuau.nequip.zip"
    checkpoint["hyper_parameters"]["model_config"][OTHER_RELEASE_PACKAGE] = str(moved)
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        ModelFromCheckpoint(path)
    assert str(error.value) == (
        f"{path}: its model was fine-tuned from {moved}, a package of another NequIP release whose code the model "
        "needs, and that file is no longer there: put the package back at that path"
    )


def test_refitting_their_energy_shifts_is_refused(foreign, tmp_path):
    data = tmp_path / "emt.xyz"
    subprocess.run([sys.executable, str(REPO / "examples" / "make_emt_data.py"), str(data), "--frames", "4",
                    "--repeat", "1", "1", "1"], check=True, capture_output=True)  # fmt: skip
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"file": str(data), "split": {"train": 2, "val": 2}, "batch_size": 2},
        "model": {"from_package": str(foreign.package("float64")), "refit_energy_shifts": True},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
    }
    result = train(config, tmp_path)
    assert result.returncode != 0
    assert (
        f"model.refit_energy_shifts: not available for a model of another NequIP release "
        f"({foreign.package('float64')}), whose energy shifts are its own modules'"
    ) in result.stderr
    assert not (tmp_path / "run").exists()
