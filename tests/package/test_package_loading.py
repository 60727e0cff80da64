"""The one loader of trained models (nequip.load): every bad checkpoint gets one message, from
every entry point; the package stage stands on it without importing training."""

import os
import subprocess
import sys

import pytest
import torch

from nequip.load import CheckpointError, ModelFileError, ModelFromCheckpoint, load_checkpoint, load_model
from nequip.package import PackageError, build_package
from nequip.scripts.evaluate import main as nequip_test
from nequip.scripts.package import main as nequip_package

from .helpers import raises_exactly


def damaged_copy(checkpoint_path, path, change):
    """A copy of the checkpoint whose dictionary ``change`` edited in place."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_holding_code_is_refused_as_not_plain_data(checkpoint_path, emt_data, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    path = damaged_copy(checkpoint_path, tmp_path / "injected.ckpt", lambda c: c.update(payload=Payload()))
    message = (
        f"{path}: not a nequip checkpoint: it holds objects that are not plain data (exec), so it was not written "
        "by nequip-train or it was tampered with; nothing in it was run"
    )
    with raises_exactly(CheckpointError, message):
        ModelFromCheckpoint(path)
    with pytest.raises(SystemExit):
        nequip_package(["build", str(path), str(tmp_path / "out.nequip.zip")])
    assert capsys.readouterr().err == f"nequip-package: error: {message}\n"
    assert nequip_test([str(path), str(emt_data), "--output", str(tmp_path / "test")]) == 1
    assert capsys.readouterr().err == f"nequip-test: error: {message}\n"
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["injected.ckpt"]


def test_every_kind_of_bad_checkpoint_has_its_message(checkpoint_path, package_path, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint_path.read_bytes()[:5000])
    renamed = tmp_path / "package.ckpt"
    renamed.write_bytes(package_path.read_bytes())
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    a_list = tmp_path / "list.ckpt"
    torch.save([torch.zeros(3)], a_list)
    lightning_only = damaged_copy(checkpoint_path, tmp_path / "other.ckpt", lambda c: c["hyper_parameters"].pop("model_config"))
    cases = {
        garbage: "not a nequip checkpoint: not a torch checkpoint (zip archive)",
        truncated: "damaged checkpoint: the file is truncated or corrupted",
        renamed: "not a nequip checkpoint: a zip archive, but not a torch checkpoint",
        foreign: "not a nequip checkpoint: it lacks the key(s) state_dict, hyper_parameters",
        a_list: "not a nequip checkpoint: it holds a list, not a dict",
        lightning_only: "not a nequip checkpoint: it lacks the key(s) hyper_parameters.model_config",
    }
    for path, reason in cases.items():
        with raises_exactly(CheckpointError, f"{path}: {reason}"):
            load_model(path)


def test_a_checkpoint_whose_weights_do_not_fit_its_model(checkpoint_path, tmp_path):
    def drop_a_weight(checkpoint):
        name = next(name for name in checkpoint["state_dict"] if name.startswith("model."))
        del checkpoint["state_dict"][name]

    path = damaged_copy(checkpoint_path, tmp_path / "partial.ckpt", drop_a_weight)
    with pytest.raises(CheckpointError) as error:
        ModelFromCheckpoint(path)
    assert str(error.value).startswith(
        f"{path}: damaged checkpoint: its weights do not fit the model its model_config describes (Error(s) in loading"
    )


def test_missing_and_empty_paths(tmp_path):
    for path in (tmp_path / "absent.ckpt", tmp_path / "absent.nequip.zip"):
        with raises_exactly(FileNotFoundError, f"{path}: no such file"):
            load_model(path)
    with raises_exactly(FileNotFoundError, "no model to load: the path is empty"):
        load_model("")
    with raises_exactly(FileNotFoundError, "no checkpoint to load: the path is empty"):
        load_checkpoint("")
    with raises_exactly(ModelFileError, f"{tmp_path / 'm.pt'}: cannot tell the kind of model file from its name: "
                        "expected a checkpoint ('.ckpt') or a package ('.nequip.zip')"):
        load_model(tmp_path / "m.pt")


def test_importing_the_package_stage_does_not_import_training():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import nequip.package"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "nequip.package" in imported and "nequip.load" in imported
    assert not [name for name in imported if name.startswith("nequip.train")]


def test_packaging_refuses_non_finite_weights(checkpoint_path, tmp_path):
    def poison(checkpoint):
        for name in ("model.per_type_energy_scales", "model.per_type_energy_shifts"):
            checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))

    path = damaged_copy(checkpoint_path, tmp_path / "diverged.ckpt", poison)
    output = tmp_path / "model.nequip.zip"
    with raises_exactly(
        ModelFileError,
        f"{path}: the model's weights are not finite (NaN or infinite): per_type_energy_shifts, "
        "per_type_energy_scales; its every prediction would be NaN. Use a checkpoint saved before training "
        "diverged (e.g. best.ckpt), or retrain from finite data",
    ):
        build_package(path, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged.ckpt"]


def test_info_into_a_closed_pipe_exits_quietly(package_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, like `| head` after its lines
    try:
        result = subprocess.run(
            [sys.executable, "-m", "nequip.scripts.package", "info", "--json", str(package_path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_a_failed_write_is_one_message_and_leaves_no_file(checkpoint_path, tmp_path):
    output = tmp_path / "out" / "model.nequip.zip"
    output.parent.mkdir()
    command = f"ulimit -f 100; exec {sys.executable} -m nequip.scripts.package build {checkpoint_path} {output}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"nequip-package: error: cannot write {output}: File too large\n"
    assert list(output.parent.iterdir()) == []
