"""Our packages carry the entries the other NequIP release reads (format 2), and packages of
format 1 (without them) are still read.

That release itself loading our package is checked by benchmarks/dev/ecosystem_roundtrip.py in
its own venv (docs/packaging.md has the result); here, its entries are read the way it reads them
(``torch.package`` importer, ``ModuleDict['sole_model']``, its data dictionary)."""

import warnings
import zipfile

import torch
import yaml
from torch.package import PackageImporter

from fixtures.training import TYPE_NAMES
from nequip.load import ModelFromPackage, read_package_metadata

from .helpers import assert_bitwise_equal, predictions

THEIR_ENTRIES = ("model/package_metadata.txt", "model/eager_model.pkl", "model/example_data.pkl")


def entries(path):
    with zipfile.ZipFile(path) as archive:
        return {name.partition("/")[2]: archive.read(name) for name in archive.namelist()}


def their_import(path, resource):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        return PackageImporter(str(path)).load_pickle("model", resource, map_location="cpu")


def test_our_package_has_their_metadata(package_path):
    ours = read_package_metadata(package_path)
    theirs = yaml.safe_load(entries(package_path)["model/package_metadata.txt"])
    assert theirs == {
        "atom_types": {0: "Cu", 1: "Au"},
        "available_models": ["eager"],
        "external_modules": ours["extern_modules"],
        "package_version_id": 2,
        "versions": {key: ours["versions"][key] for key in ("e3nn", "nequip", "torch")},
    }
    assert ours["package_format_version"] == 2  # ours is read first


def test_their_eager_model_is_ours_on_their_data_dictionary(package_path, frames, checkpoint_predictions):
    stored = their_import(package_path, "eager_model.pkl")
    assert isinstance(stored, torch.nn.ModuleDict) and list(stored) == ["sole_model"]
    model = stored["sole_model"].eval()
    assert model.type_names == TYPE_NAMES and model.model_dtype == torch.float64  # the shared run's
    assert model.metadata == ModelFromPackage(package_path).metadata()
    # their dictionary: a one-frame batch, the cell (1, 3, 3), and keys of their own
    theirs = []
    for frame in frames:
        data = dict(frame)
        num_atoms = data["pos"].shape[0]
        data.update(batch=torch.zeros(num_atoms, dtype=torch.int64), num_atoms=torch.tensor([num_atoms]))
        data["atomic_numbers"] = torch.full((num_atoms,), 29)
        theirs.append(data)
    got = predictions(model, theirs)
    # their model gives no per-atom virials
    expected = [{key: value for key, value in frame.items() if key in got[0]} for frame in checkpoint_predictions]
    assert_bitwise_equal(got, expected)


def test_their_example_data_is_the_package_example_frame(package_path):
    data = their_import(package_path, "example_data.pkl")
    num_atoms = data["pos"].shape[0]
    assert data["cell"].shape == (1, 3, 3) and data["pbc"].shape == (1, 3)
    assert torch.equal(data["batch"], torch.zeros(num_atoms, dtype=torch.int64))
    assert data["num_atoms"].tolist() == [num_atoms]


def test_a_package_of_format_1_is_still_read(package_path, tmp_path, frames, checkpoint_predictions):
    """Format 1 is format 2 without the other release's entries."""
    metadata = read_package_metadata(package_path)
    metadata["package_format_version"] = 1
    old = tmp_path / "format1.nequip.zip"
    with zipfile.ZipFile(package_path) as new, zipfile.ZipFile(old, "w") as archive:
        for info in new.infolist():
            entry = info.filename.partition("/")[2]
            if entry in THEIR_ENTRIES:
                continue
            archive.writestr(info, yaml.safe_dump(metadata) if entry == "model/metadata.yaml" else new.read(info))
    assert not set(THEIR_ENTRIES) & set(entries(old))
    assert read_package_metadata(old)["package_format_version"] == 1
    assert_bitwise_equal(predictions(ModelFromPackage(old), frames), checkpoint_predictions)
