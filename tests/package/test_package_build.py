"""Building: a failed build leaves no file; example data; fine-tuned checkpoints package too."""

import pytest
import torch

from nequip.data import synthetic_frame
from nequip.package import (
    ModelFromCheckpoint,
    ModelFromPackage,
    PackageError,
    build_package,
    dependencies,
    read_package_metadata,
)
from nequip.package import build as build_module
from nequip.package.checkpoint import read_checkpoint

from fixtures.training import training_config

from .helpers import assert_bitwise_equal, predictions, run_nequip_train


def test_failed_packaging_leaves_no_file_and_keeps_the_old_one(checkpoint_path, tmp_path, monkeypatch):
    # without a rule for sympy (which e3nn imports) the exporter fails after writing most of the archive
    monkeypatch.setattr(dependencies, "_mock_modules", {"matplotlib"})
    output = tmp_path / "model.nequip.zip"
    output.write_bytes(b"previous package")
    with pytest.raises(PackageError) as error:
        build_package(checkpoint_path, output)
    assert str(error.value).startswith(
        f"{output}: cannot package the code of the model in {checkpoint_path}; extern or mock the modules below "
        "with nequip.package.register_libraries_as_external_for_packaging:"
    )
    assert "sympy" in str(error.value)
    assert output.read_bytes() == b"previous package"
    assert list(tmp_path.iterdir()) == [output]


def test_failed_verification_leaves_no_file(package_path, tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "_identical", lambda actual, expected: False)
    output = tmp_path / "model.nequip.zip"
    with pytest.raises(PackageError) as error:
        build_package(package_path, output)
    assert str(error.value) == (
        f"{output}: the packaged model (variant 'default') does not reproduce the source model's "
        "'atomic_energy' on the example frame; no package was written"
    )
    assert list(tmp_path.iterdir()) == []


def test_example_frame_is_synthetic_when_the_training_data_is_gone(checkpoint_path):
    trained = read_checkpoint(checkpoint_path)
    config = dict(trained.training_config, data={**trained.training_config["data"], "file": "/nonexistent/emt.xyz"})
    moved = type(trained)(trained.path, trained.model, config)
    model = moved.model
    frame, origin = moved.example_frame()
    assert origin == "synthetic (training data file emt.xyz not found)"
    expected = synthetic_frame(model.type_names, model.r_max)
    assert all(torch.equal(frame[key], expected[key]) for key in expected)


@pytest.mark.slow
def test_checkpoint_fine_tuned_from_a_package_can_be_packaged(package_path, emt_data, frames, tmp_path):
    config = training_config(emt_data, tmp_path / "out", max_epochs=1, model={"from_package": str(package_path)})
    checkpoint = run_nequip_train(config, tmp_path)
    fine_tuned = tmp_path / "fine_tuned.nequip.zip"
    metadata = build_package(checkpoint, fine_tuned)
    assert metadata["origin"]["fine_tuned_from"] == str(package_path)
    assert metadata == read_package_metadata(fine_tuned)
    expected = predictions(ModelFromCheckpoint(checkpoint), frames)
    assert_bitwise_equal(predictions(ModelFromPackage(fine_tuned), frames), expected)
    # fine-tuning changed the weights
    original = predictions(ModelFromPackage(package_path), frames)
    assert not torch.equal(original[0]["forces"], expected[0]["forces"])
