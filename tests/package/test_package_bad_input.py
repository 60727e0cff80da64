"""Every way a package file can be wrong gives one clear message, from every entry point."""

import pickle
import zipfile

import pytest
import yaml

import nequip
from nequip.package import (
    PACKAGE_FORMAT_VERSION,
    ModelFromPackage,
    PackageError,
    build_package,
    load_model,
    read_package_metadata,
)
from nequip.scripts.package import main

from .helpers import raises_exactly, rewrite_archive


def with_metadata(package_path, target, **changes):
    """A copy of the package whose metadata has ``changes`` applied."""
    metadata = read_package_metadata(package_path)
    metadata.update(changes)
    text = yaml.safe_dump(metadata).encode()
    return rewrite_archive(package_path, target, lambda name: text if name == "model/metadata.yaml" else None)


def assert_cli_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"nequip-package: error: {message}\n"


def test_not_a_zip_archive(tmp_path, capsys):
    path = tmp_path / "text.nequip.zip"
    path.write_text("not an archive\n")
    message = f"{path}: not a nequip package: not a zip archive"
    with raises_exactly(PackageError, message):
        ModelFromPackage(path)
    assert_cli_error(capsys, ["info", str(path)], message)


def test_truncated_zip_archive(package_path, tmp_path, capsys):
    path = tmp_path / "truncated.nequip.zip"
    data = package_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = f"{path}: damaged package: the zip archive is truncated or corrupted"
    with raises_exactly(PackageError, message):
        load_model(path)
    assert_cli_error(capsys, ["list", str(path)], message)


def test_zip_archive_without_metadata(tmp_path, capsys):
    path = tmp_path / "other.nequip.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/model/default.pkl", pickle.dumps({"not": "a model"}))
    message = f"{path}: not a nequip package: no metadata entry 'model/metadata.yaml' in the zip archive"
    with raises_exactly(PackageError, message):
        ModelFromPackage(path)
    assert_cli_error(capsys, ["info", str(path)], message)


def test_newer_format_version_is_refused_with_upgrade_advice(package_path, tmp_path, capsys):
    newer = PACKAGE_FORMAT_VERSION + 1
    path = with_metadata(package_path, tmp_path / "future.nequip.zip", package_format_version=newer)
    message = (
        f"{path}: package format version {newer} is newer than this nequip ({nequip.__version__}) can read "
        f"(format version {PACKAGE_FORMAT_VERSION} at most); upgrade nequip to load it"
    )
    with raises_exactly(PackageError, message):
        ModelFromPackage(path)
    with raises_exactly(PackageError, message):
        build_package(path, tmp_path / "again.nequip.zip")
    assert not (tmp_path / "again.nequip.zip").exists()


def test_info_shows_a_newer_package_with_a_warning(package_path, tmp_path, capsys):
    newer = PACKAGE_FORMAT_VERSION + 1
    path = with_metadata(package_path, tmp_path / "future.nequip.zip", package_format_version=newer)
    assert main(["info", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert f'"package_format_version": {newer}' in captured.out
    assert captured.err == (
        f"nequip-package: warning: {path}: package format version {newer} is newer than this nequip reads "
        f"({PACKAGE_FORMAT_VERSION}); showing its metadata as stored\n"
    )


@pytest.mark.parametrize(
    "version, shown",
    [(None, "None"), ("one", "'one'"), (0, "0"), (True, "True")],
    ids=["missing", "string", "zero", "boolean"],
)
def test_invalid_format_version(package_path, tmp_path, version, shown):
    path = with_metadata(package_path, tmp_path / "bad.nequip.zip", package_format_version=version)
    with pytest.raises(PackageError) as error:
        ModelFromPackage(path)
    assert str(error.value) == (
        f"{path}: damaged package: 'model/metadata.yaml' has no valid 'package_format_version' "
        f"(a positive integer), got {shown}"
    )


def test_metadata_that_is_not_a_mapping(package_path, tmp_path):
    path = rewrite_archive(
        package_path, tmp_path / "list.nequip.zip", lambda name: b"- 1\n" if name == "model/metadata.yaml" else None
    )
    with pytest.raises(PackageError) as error:
        ModelFromPackage(path)
    assert str(error.value) == f"{path}: damaged package: 'model/metadata.yaml' is not a YAML mapping"


def test_metadata_missing_a_required_key(package_path, tmp_path):
    metadata = read_package_metadata(package_path)
    del metadata["model_variants"]
    text = yaml.safe_dump(metadata).encode()
    path = rewrite_archive(
        package_path, tmp_path / "partial.nequip.zip", lambda name: text if name == "model/metadata.yaml" else None
    )
    with pytest.raises(PackageError) as error:
        ModelFromPackage(path)
    assert str(error.value) == f"{path}: damaged package: 'model/metadata.yaml' lacks the key(s) model_variants"


def test_unknown_model_variant(package_path):
    with pytest.raises(PackageError) as error:
        ModelFromPackage(package_path, variant="compiled")
    assert str(error.value) == f"{package_path}: no model variant 'compiled' in the package; it has: default"


def test_wrong_file_name_extension(package_path, tmp_path, capsys):
    wrong = tmp_path / "model.zip"
    wrong.write_bytes(package_path.read_bytes())
    message = f"{wrong}: a nequip package file name must end with '.nequip.zip'"
    with raises_exactly(PackageError, message):
        ModelFromPackage(wrong)
    assert_cli_error(capsys, ["info", str(wrong)], message)

    with pytest.raises(ValueError) as error:
        load_model(tmp_path / "model.pth")
    assert str(error.value) == (
        f"{tmp_path / 'model.pth'}: cannot tell the kind of model file from its name: "
        "expected a checkpoint ('.ckpt') or a package ('.nequip.zip')"
    )


def test_build_refuses_a_wrong_output_name_before_any_work(tmp_path, capsys):
    source = tmp_path / "missing.ckpt"
    output = tmp_path / "model.zip"
    assert_cli_error(
        capsys, ["build", str(source), str(output)], f"{output}: a nequip package file name must end with '.nequip.zip'"
    )
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_a_source_of_unknown_kind(tmp_path, capsys):
    source = tmp_path / "model.pt"
    source.write_bytes(b"")
    assert_cli_error(
        capsys,
        ["build", str(source), str(tmp_path / "out.nequip.zip")],
        f"{source}: cannot tell the kind of model file from its name: "
        "expected a checkpoint ('.ckpt') or a package ('.nequip.zip')",
    )
    assert list(tmp_path.iterdir()) == [source]


def test_missing_files(tmp_path, capsys):
    path = tmp_path / "absent.nequip.zip"
    with pytest.raises(FileNotFoundError) as error:
        load_model(path)
    assert str(error.value) == f"{path}: no such file"
    assert_cli_error(capsys, ["list", str(path)], f"{path}: no such file")
    assert_cli_error(
        capsys,
        ["build", str(tmp_path / "absent.ckpt"), str(tmp_path / "out.nequip.zip")],
        f"{tmp_path / 'absent.ckpt'}: no such file",
    )
    assert list(tmp_path.iterdir()) == []


def test_every_format_version_up_to_the_current_one_has_a_loader():
    from nequip.load import PACKAGE_LOADERS

    assert sorted(PACKAGE_LOADERS) == list(range(1, PACKAGE_FORMAT_VERSION + 1))
