"""Training runs that cannot go on end in one message, and leave nothing half-done behind.

Bad data (empty, non-finite or too large labels), a model to fine-tune whose weights are not
finite, an output directory in use or under a file, a loss that is no longer finite, a write
that fails: each is one line from
nequip-train (no traceback), and what a refused run would have written is not there.
"""

import os
import resource
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml

import nequip.load
from nequip.package import build_package
from nequip.scripts.train import main as nequip_train
from nequip.train import load_checkpoint, train, validate_config
from nequip.train.lightning_module import NequIPLightningModule
from nequip.train.training import LOCK_NAME, OutputDirInUseError, _CSVLogger, output_dir_lock
from nequip.utils.atomic_io import WriteError

from fixtures.training import training_config


def write_config(raw: dict, path) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_output_dir_under_a_file_is_refused(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    config = write_config(training_config(tiny_data, blocker / "run"), tmp_path / "config.yaml")
    assert nequip_train([config]) == 2
    assert capsys.readouterr().err == (
        f"nequip-train: invalid configuration {config}: output_dir: {blocker / 'run'} is under {blocker},"
        " which is a file; give a directory elsewhere\n"
    )
    assert nequip_train([write_config(training_config(tiny_data, blocker), tmp_path / "config.yaml")]) == 2
    assert capsys.readouterr().err.endswith(
        f"output_dir: {blocker} is a file; give a directory (it is created if missing)\n"
    )
    assert blocker.read_text() == "not a directory"


def test_a_checkpoint_as_data_file_is_named_for_what_it_is(trained_run, tmp_path, capsys):
    checkpoint = trained_run / "best.ckpt"
    output_dir = tmp_path / "out"
    config = write_config(training_config(checkpoint, output_dir), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == (
        f"nequip-train: data.file: {checkpoint} is a training checkpoint, not a file of structures;"
        " give structures with their labels in a format ASE reads (e.g. extxyz)\n"
    )
    assert not output_dir.exists()


def test_a_nan_label_is_refused_by_its_frame_in_the_file(tiny_data, tmp_path, capsys):
    frames = ase.io.read(tiny_data, index=":")
    frames[7].calc.results["energy"] = np.nan  # the third training frame after the split's shuffle
    data = tmp_path / "nan.xyz"
    ase.io.write(data, frames)
    output_dir = tmp_path / "out"
    config = write_config(training_config(data, output_dir), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == (
        f"nequip-train: {data}: frame 7: label 'total_energy' is not finite (nan); fix or remove the frame\n"
    )
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "label, value, shown",
    [
        ("energy", 1e300, "'total_energy' is 1e+300 eV (1.25e+299 eV per atom)"),
        ("forces", 1e160, "'forces' is 1e+160 eV/Å on atom 5"),
    ],
)
def test_a_label_whose_loss_overflows_is_refused_by_its_frame(tiny_data, tmp_path, capsys, label, value, shown):
    frames = ase.io.read(tiny_data, index=":")
    if label == "energy":
        frames[7].calc.results["energy"] = value
    else:
        frames[7].calc.results["forces"][5, 1] = value
    data = tmp_path / "huge.xyz"
    ase.io.write(data, frames)
    output_dir = tmp_path / "out"
    config = write_config(training_config(data, output_dir), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == (
        f"nequip-train: {data}: frame 7: label {shown}, too large to train on (its squared error in the loss"
        " overflows float64); fix or remove the frame, or check data.energy_units_to_eV\n"
    )
    assert not output_dir.exists()


def test_an_empty_data_file_is_named_empty(tmp_path, capsys):
    data = tmp_path / "train.xyz"
    data.write_bytes(b"")
    output_dir = tmp_path / "out"
    config = write_config(training_config(data, output_dir), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == (
        f"nequip-train: data.file: {data} is empty; give a file of structures with their labels (e.g. extxyz)\n"
    )
    assert not output_dir.exists()


@pytest.mark.parametrize("kind", ["checkpoint", "package"])
def test_fine_tuning_from_non_finite_weights_names_them(trained_run, tiny_data, tmp_path, capsys, monkeypatch, kind):
    checkpoint = torch.load(trained_run / "best.ckpt", weights_only=True)
    name = "readout.weight"
    checkpoint["state_dict"][f"model.{name}"][0] = float("nan")
    source = tmp_path / "diverged.ckpt"
    torch.save(checkpoint, source)
    if kind == "package":
        # loading refuses such weights: make the package of the finite model, then poison it
        package = tmp_path / "diverged.nequip.zip"
        finite = tmp_path / "finite.ckpt"
        checkpoint["state_dict"][f"model.{name}"][0] = 0.0
        torch.save(checkpoint, finite)
        build_package(finite, package, verify=False)
        monkeypatch.setattr(nequip.load, "PACKAGE_LOADERS", _poisoning(nequip.load.PACKAGE_LOADERS, name))
        source = package
    output_dir = tmp_path / "fine"
    raw = training_config(tiny_data, output_dir, model={f"from_{kind}": str(source)})
    del raw["data"]["type_names"]
    assert nequip_train([write_config(raw, tmp_path / "config.yaml")]) == 1
    assert capsys.readouterr().err == (
        f"nequip-train: {source}: the model's weights are not finite (NaN or infinite): {name}; its every "
        "prediction would be NaN. Use a checkpoint saved before training diverged (e.g. best.ckpt), or retrain "
        "from finite data\n"
    )
    assert not output_dir.exists()


def _poisoning(loaders, name):
    """Package loaders whose models come out with a NaN in the weight ``name``."""

    def poisoned(load):
        def load_poisoned(path, variant):
            model = load(path, variant)
            with torch.no_grad():
                model.get_parameter(name)[0] = float("nan")
            return model

        return load_poisoned

    return {version: poisoned(load) for version, load in loaders.items()}


def test_a_second_run_into_a_locked_output_dir_is_refused(tiny_data, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    lock = output_dir / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = os.uname().nodename
        lock.write_text(f"{holder.pid} {host}\n")
        with pytest.raises(OutputDirInUseError) as error:
            train(validate_config(training_config(tiny_data, output_dir, max_epochs=1)))
    finally:
        holder.kill()
        holder.wait()
    assert str(error.value) == (
        f"output_dir {output_dir} is in use by another training run (process {holder.pid} on {host}, lock file"
        f" {lock}); wait for it to end or choose another output_dir. If no run is using it, delete {lock}"
    )
    assert sorted(p.name for p in output_dir.iterdir()) == [LOCK_NAME]
    assert lock.read_text() == f"{holder.pid} {host}\n"


def test_a_stale_lock_and_unfinished_writes_of_a_killed_run_are_cleaned_up(tiny_data, tmp_path, caplog):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    lock = output_dir / LOCK_NAME
    lock.write_text(f"{dead.pid} {host}\n")
    unfinished = output_dir / ".best.ckpt.k3x_9q2a.tmp"
    unfinished.write_bytes(b"half a checkpoint")
    kept = output_dir / "notes.tmp"  # not a temporary file of ours
    kept.write_text("mine")

    with caplog.at_level("INFO"):
        train(validate_config(training_config(tiny_data, output_dir, max_epochs=1)))
    assert f"note: {lock} was left by process {dead.pid} on {host}, which is no longer running; taking it over" in caplog.messages
    assert f"note: removed {unfinished}, an unfinished write of an earlier run that was stopped" in caplog.messages
    assert sorted(p.name for p in output_dir.iterdir()) == ["best.ckpt", "config.yaml", "last.ckpt", "logs", "notes.tmp"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    training_step = NequIPLightningModule.training_step

    def diverging_step(self, batch, batch_idx):
        loss = training_step(self, batch, batch_idx)
        # 3 steps per epoch: the second batch of the second epoch diverges
        return loss * float("nan") if self.global_step == 4 else loss

    monkeypatch.setattr(NequIPLightningModule, "training_step", diverging_step)
    output_dir = tmp_path / "out"
    config = write_config(training_config(tiny_data, output_dir, max_epochs=2), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    last = output_dir / "last.ckpt"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nequip-train: training stopped: the loss became nan at epoch 2, batch 1; the last good checkpoint is {last},"
        " whose weights are intact. Train again into a new output_dir with a lower optimizer.lr or a"
        " trainer.gradient_clip_val (model.from_checkpoint can start from that checkpoint)"
    )
    assert load_checkpoint(last)["epoch"] == 0  # saved after the first epoch, not since
    assert not (output_dir / LOCK_NAME).exists()


def _limited_file_size(limit_bytes):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


@pytest.mark.slow
def test_a_failed_write_of_a_checkpoint_is_one_message_and_leaves_no_temporary_file(tiny_data, tmp_path):
    output_dir = tmp_path / "out"
    config = write_config(training_config(tiny_data, output_dir, max_epochs=1), tmp_path / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.train", config],
        capture_output=True,
        text=True,
        # as `ulimit -f 10`: config.yaml and the logs fit, a checkpoint (25 kB) does not; nequip-train
        # ignores SIGXFSZ, so the write fails instead of the process dying
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024, 10 * 1024)),
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"nequip-train: cannot write {output_dir / 'best.ckpt'}: File too large"
    assert sorted(p.name for p in output_dir.iterdir()) == ["config.yaml", "logs"]  # no temporary file, no lock


def test_a_failed_write_of_the_config_is_one_message(tiny_data, tmp_path, capsys):
    output_dir = tmp_path / "out"
    (output_dir / "config.yaml").mkdir(parents=True)  # in the way of the resolved configuration
    config = write_config(training_config(tiny_data, output_dir, max_epochs=1), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == f"nequip-train: cannot write {output_dir / 'config.yaml'}: Is a directory\n"
    assert sorted(p.name for p in output_dir.iterdir()) == ["config.yaml"]
    assert not list((output_dir / "config.yaml").iterdir())


def test_a_failed_write_of_the_logs_names_the_file(tmp_path):
    logger = _CSVLogger(tmp_path, name="logs")
    logger.log_metrics({"val_loss": 1.0}, step=0)
    metrics = Path(logger.experiment.metrics_file_path)
    metrics.mkdir(parents=True)  # in the way of the metrics file
    with pytest.raises(WriteError) as error:
        logger.save()
    assert str(error.value) == f"cannot write {metrics}: Is a directory"
    hparams = Path(logger.log_dir) / "hparams.yaml"
    hparams.mkdir()
    with pytest.raises(WriteError) as error:
        logger.log_hyperparams({"lr": 0.01})
    assert str(error.value) == f"cannot write {hparams}: Is a directory"


def test_trainer_options_lightning_refuses_are_one_message_before_anything_is_written(tiny_data, tmp_path, capsys):
    output_dir = tmp_path / "out"
    raw = training_config(tiny_data, output_dir)
    raw["trainer"]["accelerator"] = "foo"
    config = write_config(raw, tmp_path / "config.yaml")
    assert nequip_train([config]) == 2
    message, names = capsys.readouterr().err.split(" Available names are: ")
    assert message == (
        f"nequip-train: invalid configuration {config}: trainer (accelerator 'foo', devices 1, strategy 'auto'):"
        " You selected an invalid accelerator name: `accelerator='foo'`."
    )
    assert "cpu" in names.rstrip(".\n").split(", ")  # Lightning's list, in its registry's order
    assert not output_dir.exists()


def test_a_missing_data_file_is_named_by_its_key(tmp_path, capsys):
    output_dir = tmp_path / "out"
    missing = tmp_path / "missing.xyz"
    config = write_config(training_config(missing, output_dir), tmp_path / "config.yaml")
    assert nequip_train([config]) == 1
    assert capsys.readouterr().err == f"nequip-train: data.file: structure file {missing} does not exist; check the path\n"
    assert not output_dir.exists()


def test_a_run_holding_the_lock_keeps_a_second_one_out(tiny_data, tmp_path):
    output_dir = tmp_path / "out"
    host = os.uname().nodename
    with output_dir_lock(output_dir) as lock:
        assert lock.read_text() == f"{os.getpid()} {host}\n"
        with pytest.raises(OutputDirInUseError) as error:
            train(validate_config(training_config(tiny_data, output_dir, max_epochs=1)))
        assert str(error.value) == (
            f"output_dir {output_dir} is in use by another training run (process {os.getpid()} on {host}, lock file"
            f" {lock}); wait for it to end or choose another output_dir. If no run is using it, delete {lock}"
        )
    assert list(output_dir.iterdir()) == []  # released
