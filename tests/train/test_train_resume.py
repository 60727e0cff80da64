"""Resuming a run: exact continuation, the settings it may change, and refusals that write nothing.

A refused resume is one message naming the key, both values and the way out (exit code 2),
and leaves output_dir as it was: config.yaml, the checkpoints and the logs untouched.
"""

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from nequip.scripts.train import main as nequip_train
from nequip.train import ConfigError, load_checkpoint, train, validate_config
from nequip.train.training import DataChangedError

from fixtures.training import make_emt_data, training_config

from .helpers import logged_column


def files(directory: Path) -> dict:
    """Every file below ``directory`` by its relative path, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(trained_run, tiny_data, tmp_path):
    """A copy of the two-epoch session run, and the configuration file it was trained with."""
    output_dir = tmp_path / "out"
    shutil.copytree(trained_run, output_dir)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(training_config(tiny_data, output_dir, max_epochs=2)))
    return output_dir, str(config)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tiny_data, tmp_path):
    train(validate_config(training_config(tiny_data, tmp_path / "straight", max_epochs=4)))
    train(validate_config(training_config(tiny_data, tmp_path / "resumed", max_epochs=2)))
    # the same command again, allowed two more epochs: picks up last.ckpt; settings that only
    # say how the run reports and loads its data may change on the way
    resumed_config = training_config(tiny_data, tmp_path / "resumed", max_epochs=4)
    resumed_config["trainer"]["log_every_n_steps"] = 1
    resumed_config["data"]["val_batch_size"] = 2
    train(validate_config(resumed_config))

    straight = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 12
    for key in ("state_dict", "current_model_state"):
        assert straight[key].keys() == resumed[key].keys()
        for name in straight[key]:
            assert torch.equal(straight[key][name], resumed[key][name]), (key, name)
    for name, state in straight["optimizer_states"][0]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer_states"][0]["state"][name]["exp_avg"])
    # Lightning skips the scheduler step of the epoch a checkpoint was saved at: taken on resume
    assert straight["lr_schedulers"] == resumed["lr_schedulers"]
    assert logged_column(tmp_path / "straight", "val_loss") == logged_column(tmp_path / "resumed", "val_loss")
    # what the resumed launch applied is what it records
    recorded = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    assert recorded["trainer"]["max_epochs"] == 4 and recorded["trainer"]["log_every_n_steps"] == 1
    assert resumed["hyper_parameters"]["config"]["trainer"]["log_every_n_steps"] == 1


@pytest.mark.parametrize(
    "override, key, new, old",
    [
        # the restored optimizer state would win over a new learning rate
        ("optimizer.lr=0.002", "optimizer.lr", "0.002", "0.01"),
        ("data.batch_size=3", "data.batch_size", "3", "2"),
        ("ema=null", "ema", "null", "{decay: 0.9}"),
        # the restored scheduler state would win over a new patience
        ("lr_scheduler.patience=3", "lr_scheduler.patience", "3", "10"),
        ("trainer.seed=7", "trainer.seed", "7", "1"),
    ],
)
def test_a_setting_a_resume_cannot_apply_is_refused_before_anything_is_written(finished_run, capsys, override, key, new, old):
    output_dir, config = finished_run
    before = files(output_dir)
    assert nequip_train([config, "trainer.max_epochs=3", override]) == 2
    last = output_dir / "last.ckpt"
    assert capsys.readouterr().err == (
        f"nequip-train: invalid configuration {config}: {key}: {new} differs from {old} in {last}, which this run"
        " would resume; a resumed run keeps the settings it started with (docs/configuration.md lists those it may"
        f" change). To resume, give {old}; to train on with {new}, fine-tune from {last} (model.from_checkpoint)"
        " into a new output_dir\n"
    )
    assert files(output_dir) == before


@pytest.mark.parametrize("max_epochs, overrides", [(2, ["optimizer.lr=0.002"]), (2, []), (1, [])])
def test_a_resume_that_would_train_nothing_is_refused_before_anything_is_written(finished_run, capsys, max_epochs, overrides):
    output_dir, config = finished_run
    before = files(output_dir)
    assert nequip_train([config, f"trainer.max_epochs={max_epochs}", *overrides]) == 2
    err = capsys.readouterr().err
    last = output_dir / "last.ckpt"
    if overrides:  # the first problem is named: the setting a resume cannot apply
        assert err.startswith(f"nequip-train: invalid configuration {config}: optimizer.lr: 0.002 differs from 0.01 in")
    else:
        assert err == (
            f"nequip-train: invalid configuration {config}: trainer.max_epochs: {max_epochs} is not more than the 2"
            f" epochs {last} has trained, so resuming it would train nothing; give trainer.max_epochs above 2 to"
            " train on, or a new output_dir to train afresh\n"
        )
    assert files(output_dir) == before


def test_a_resume_whose_max_time_is_spent_is_refused(finished_run, capsys):
    output_dir, config = finished_run
    last = output_dir / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    # as saved by a run with a trainer.max_time: Lightning's Timer counts the training time
    checkpoint["callbacks"]["Timer"] = {"time_elapsed": {"train": 3725.5, "sanity_check": 0.0, "validate": 1.0}}
    torch.save(checkpoint, last)
    before = files(output_dir)
    assert nequip_train([config, "trainer.max_epochs=3", "trainer.max_time=00:01:00:00"]) == 2
    assert capsys.readouterr().err == (
        f"nequip-train: invalid configuration {config}: trainer.max_time: 00:01:00:00 is not more than the 1:02:05 of"
        f" training {last} has had (max_time counts every launch of a run), so resuming it would train nothing;"
        " raise trainer.max_time to train on, or use a new output_dir to train afresh\n"
    )
    assert files(output_dir) == before


def test_resuming_with_a_different_model_is_refused(finished_run, tiny_data):
    output_dir, _ = finished_run
    before = files(output_dir)
    raw = training_config(tiny_data, output_dir, max_epochs=3)
    raw["model"]["num_features"] = 8
    with pytest.raises(ConfigError) as error:
        train(validate_config(raw))
    assert str(error.value) == (
        f"model.num_features: 8 differs from 4 in {output_dir / 'last.ckpt'}, which this run would resume;"
        " use a new output_dir to train a different model"
    )
    assert files(output_dir) == before


def test_resuming_on_changed_data_is_refused_as_such(finished_run, tmp_path):
    output_dir, _ = finished_run
    before = files(output_dir)
    saved = load_checkpoint(output_dir / "last.ckpt")["hyper_parameters"]["config"]["data"]["file"]
    other = tmp_path / "other.xyz"
    make_emt_data().write_emt_data(other, n_frames=10, seed=5, repeat=(1, 1, 2))
    with pytest.raises(DataChangedError) as error:
        train(validate_config(training_config(other, output_dir, max_epochs=3)))

    def sha(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]

    assert str(error.value) == (
        f"cannot resume from {output_dir / 'last.ckpt'}: the data changed since it was saved (data.file is now"
        f" {other} (sha256 {sha(other)}), was {saved} (sha256 {sha(saved)})); restore that data to resume, or use"
        " a new output_dir to train on this data"
    )
    assert files(output_dir) == before


def test_a_checkpoint_that_predates_closest_training_pair_resumes_and_records_it(finished_run):
    output_dir, config = finished_run
    last = output_dir / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    recorded = checkpoint["hyper_parameters"]["model_config"].pop("closest_training_pair")
    torch.save(checkpoint, last)
    assert nequip_train([config, "trainer.max_epochs=3"]) == 0
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 2
    assert resumed["hyper_parameters"]["model_config"]["closest_training_pair"] == recorded
