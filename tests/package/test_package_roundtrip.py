"""A package reproduces its checkpoint exactly, carries the right weights, code and metadata."""

import zipfile

import torch

from nequip.data import TypeMapper, from_ase, read_frames
from nequip.package import (
    PACKAGE_FORMAT_VERSION,
    ModelFromCheckpoint,
    ModelFromPackage,
    load_example_data,
    load_model,
    read_package_metadata,
)

from fixtures.training import R_MAX, TYPE_NAMES

from .helpers import assert_bitwise_equal, predictions


def test_package_predictions_equal_checkpoint_bitwise(package_path, frames, checkpoint_predictions):
    assert_bitwise_equal(predictions(ModelFromPackage(package_path), frames), checkpoint_predictions)


def test_repackaged_predictions_equal_original_bitwise(repackaged_path, frames, checkpoint_predictions):
    assert_bitwise_equal(predictions(ModelFromPackage(repackaged_path), frames), checkpoint_predictions)


def test_repackaging_keeps_the_original_code(package_path, repackaged_path):
    def interned_sources(path):
        with zipfile.ZipFile(path) as archive:
            sources = {name.partition("/")[2]: archive.read(name) for name in archive.namelist()}
        return {name: source for name, source in sources.items() if name.startswith(("nequip/", "e3nn/"))}

    original = interned_sources(package_path)
    assert any(name.startswith("nequip/model/") for name in original)
    assert any(name.startswith("e3nn/o3/") for name in original)
    assert interned_sources(repackaged_path) == original


def test_package_model_runs_the_packaged_code(package_path):
    model = ModelFromPackage(package_path)
    assert type(model).__name__ == "NequIPModel"
    assert type(model).__module__.startswith("<torch_package_")


def test_package_holds_the_ema_weights(checkpoint_path, package_path):
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    ema = {name.removeprefix("model."): value for name, value in checkpoint["state_dict"].items()}
    raw = {name.removeprefix("model."): value for name, value in checkpoint["current_model_state"].items()}
    packaged = ModelFromPackage(package_path).state_dict()
    assert packaged.keys() == ema.keys()
    for name, value in packaged.items():
        assert torch.equal(value, ema[name]), name
    assert any(not torch.equal(value, raw[name]) for name, value in packaged.items()), "EMA equals raw weights"


def test_loaders_return_eval_mode_models(checkpoint_path, package_path):
    for model in (ModelFromCheckpoint(checkpoint_path), ModelFromPackage(package_path)):
        assert not model.training
        assert all(not module.training for module in model.modules())


def test_load_model_dispatches_by_file_name(checkpoint_path, package_path):
    assert type(load_model(package_path)).__module__.startswith("<torch_package_")
    assert type(load_model(checkpoint_path)).__module__ == "nequip.model.nequip_model"


def test_metadata_describes_the_package(checkpoint_path, package_path):
    import e3nn

    import nequip

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    metadata = read_package_metadata(package_path)
    assert metadata["package_format_version"] == PACKAGE_FORMAT_VERSION
    assert metadata["versions"]["nequip"] == nequip.__version__
    assert metadata["versions"]["e3nn"] == e3nn.__version__
    assert metadata["versions"]["torch"] == str(torch.__version__)
    assert sorted(metadata["extern_modules"]) == ["numpy", "opt_einsum_fx", "packaging", "torch"]
    assert metadata["extern_modules"]["torch"] == str(torch.__version__)
    assert metadata["mocked_modules"] == ["matplotlib", "sympy"]
    assert metadata["model_variants"] == ["default"]
    assert metadata["type_names"] == TYPE_NAMES
    assert metadata["r_max"] == R_MAX
    assert metadata["model_config"] == checkpoint["hyper_parameters"]["model_config"]
    assert metadata["model_metadata"] == ModelFromCheckpoint(checkpoint_path).metadata()
    assert metadata["origin"] == {"kind": "checkpoint", "file": "last.ckpt", "weights": "ema"}


def test_repackaged_metadata_names_its_origin(package_path, repackaged_path):
    original, again = read_package_metadata(package_path), read_package_metadata(repackaged_path)
    assert again["origin"] == {
        "kind": "package",
        "file": package_path.name,
        "package_format_version": original["package_format_version"],
        "origin": original["origin"],
    }
    for key in ("model_config", "model_metadata", "type_names", "example_data", "versions"):
        assert again[key] == original[key], key


def test_example_data_is_the_first_training_frame(package_path, emt_data):
    first = read_frames(emt_data)[0]
    expected = from_ase(first, TypeMapper(TYPE_NAMES), R_MAX, labels=())
    example = load_example_data(package_path)
    assert example.keys() == expected.keys()
    for key, value in expected.items():
        assert example[key].dtype == value.dtype, key
        assert torch.equal(example[key], value), key
    assert read_package_metadata(package_path)["example_data"] == {
        "origin": f"first frame of the training data file {emt_data.name}",
        "num_atoms": len(first),
        "num_edges": int(expected["edge_index"].shape[1]),
    }
