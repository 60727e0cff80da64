"""Training runs: learning, checkpoints, exact resumption, fine-tuning, damaged checkpoints."""

import shutil

import numpy as np
import pytest
import torch
import yaml

from nequip.scripts.train import main as nequip_train
from nequip.train import AtomicCheckpointIO, CheckpointError, ConfigError, load_checkpoint, train, validate_config
from nequip.inference.evaluation import compute_metrics, predict
from nequip.inference import open_model
from nequip.train.training import load_source_model, resolve_model
from nequip.data import read_frames

from .helpers import SMALL_MODEL, TYPE_NAMES, config_dict, logged_column, make_emt_data


def _checkpoint_callback_state(checkpoint):
    (state,) = [value for key, value in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    return state


@pytest.mark.slow
def test_training_cuts_force_error_on_held_out_frames(tmp_path):
    emt = make_emt_data()
    files = {}
    for name, frames, seed in (("train", 32, 1), ("val", 6, 2), ("test", 8, 3)):
        files[name] = tmp_path / f"{name}.xyz"
        emt.write_emt_data(files[name], n_frames=frames, seed=seed, repeat=(1, 1, 2))
    raw = config_dict(files["train"], tmp_path / "out", model=SMALL_MODEL, max_epochs=5)
    raw["data"] = {"type_names": TYPE_NAMES, "train_file": str(files["train"]), "val_file": str(files["val"]), "batch_size": 4}
    raw["optimizer"] = {"lr": 0.02}
    raw["ema"] = {"decay": 0.8}
    train(validate_config(raw))

    held_out = read_frames(files["test"])
    results = predict(open_model(tmp_path / "out" / "best.ckpt"), held_out)
    force_mae = compute_metrics(results, TYPE_NAMES)["forces"]["mae"]
    force_std = np.concatenate([atoms.get_forces().ravel() for atoms in held_out]).std()
    assert force_mae < 0.3 * force_std, (force_mae, force_std)


def test_checkpoint_holds_weights_ema_optimizer_config_and_versions(trained_run):
    assert {p.name for p in trained_run.iterdir()} == {"best.ckpt", "last.ckpt", "config.yaml", "logs"}
    assert (trained_run / "logs" / "version_0" / "metrics.csv").is_file()
    checkpoint = load_checkpoint(trained_run / "last.ckpt")
    assert checkpoint["epoch"] == 1
    assert set(checkpoint["nequip_versions"]) == {"torch", "e3nn", "lightning", "nequip"}
    assert checkpoint["nequip_versions"]["torch"] == str(torch.__version__)
    config = checkpoint["hyper_parameters"]["config"]
    assert validate_config(config).trainer.max_epochs == 2
    model_config = checkpoint["hyper_parameters"]["model_config"]
    assert model_config["type_names"] == TYPE_NAMES
    assert model_config["avg_num_neighbors"] > 0  # filled from the training data
    assert len(checkpoint["optimizer_states"]) == 1 and checkpoint["lr_schedulers"]
    # with EMA, state_dict holds the averages and current_model_state the raw weights
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[name], raw[name]) for name in averaged)
    assert len(logged_column(trained_run, "val_loss")) == 2


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tiny_data, tmp_path):
    train(validate_config(config_dict(tiny_data, tmp_path / "straight", max_epochs=4)))
    train(validate_config(config_dict(tiny_data, tmp_path / "resumed", max_epochs=2)))
    # the same command again, allowed two more epochs: picks up last.ckpt
    train(validate_config(config_dict(tiny_data, tmp_path / "resumed", max_epochs=4)))

    straight = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 12
    for key in ("state_dict", "current_model_state"):
        assert straight[key].keys() == resumed[key].keys()
        for name in straight[key]:
            assert torch.equal(straight[key][name], resumed[key][name]), (key, name)
    for name, state in straight["optimizer_states"][0]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer_states"][0]["state"][name]["exp_avg"])
    assert logged_column(tmp_path / "straight", "val_loss") == logged_column(tmp_path / "resumed", "val_loss")


def test_resuming_with_a_different_model_is_refused(trained_run, tiny_data, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copy(trained_run / "last.ckpt", output_dir / "last.ckpt")
    raw = config_dict(tiny_data, output_dir, max_epochs=3)
    raw["model"]["num_features"] = 8
    with pytest.raises(ConfigError) as error:
        train(validate_config(raw))
    assert str(error.value) == (
        f"model.num_features: 8 differs from 4 in {output_dir / 'last.ckpt'}, which this run would resume;"
        " use a new output_dir to train a different model"
    )


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("truncated", "damaged checkpoint: the file is truncated or corrupted"),
        ("garbage", "not a nequip checkpoint: not a torch checkpoint (zip archive)"),
    ],
)
def test_damaged_checkpoint_is_refused(trained_run, tiny_data, tmp_path, damage, problem, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    good = (trained_run / "last.ckpt").read_bytes()
    damaged = good[: len(good) // 2] if damage == "truncated" else b"not a checkpoint" * 100
    last = output_dir / "last.ckpt"
    last.write_bytes(damaged)
    message = f"{last}: {problem}"

    with pytest.raises(CheckpointError) as error:
        load_checkpoint(last)
    assert str(error.value) == message
    with pytest.raises(CheckpointError) as error:
        train(validate_config(config_dict(tiny_data, output_dir, max_epochs=3)))
    assert str(error.value) == f"cannot resume: {message}; delete it to start over"
    # refused before anything was written: the damaged file is as it was, and alone
    assert last.read_bytes() == damaged
    assert [p.name for p in output_dir.iterdir()] == ["last.ckpt"]

    # and as the starting point of fine-tuning, through the command line
    raw = config_dict(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(last)})
    config_path = tmp_path / "fine.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    assert nequip_train([str(config_path)]) == 1
    assert capsys.readouterr().err == f"nequip-train: {message}\n"
    assert not (tmp_path / "fine").exists()


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == f"{path}: not a nequip checkpoint: it lacks the key(s) state_dict, hyper_parameters"


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    with pytest.raises(Exception):
        # a lambda cannot be pickled: the write fails half-way
        io.save_checkpoint({"weights": torch.zeros(1000), "broken": lambda: None}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_fine_tuning_starts_from_the_loaded_weights(trained_run, tiny_data, tmp_path):
    source = trained_run / "best.ckpt"
    raw = config_dict(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(source)}, max_epochs=1)
    del raw["data"]["type_names"]  # taken from the model
    train(validate_config(raw))

    source_checkpoint = load_checkpoint(source)
    source_val_loss = _checkpoint_callback_state(source_checkpoint)["best_model_score"].item()
    first_val_loss = logged_column(tmp_path / "fine", "val_loss")[0]
    assert first_val_loss == pytest.approx(source_val_loss, rel=1e-9, abs=0)
    fine_tuned = load_checkpoint(tmp_path / "fine" / "last.ckpt")
    assert fine_tuned["hyper_parameters"]["model_config"] == source_checkpoint["hyper_parameters"]["model_config"]


def test_refit_energy_shifts_takes_new_data_statistics(trained_run, tiny_data, tmp_path):
    raw = config_dict(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(trained_run / "best.ckpt"), "refit_energy_shifts": True})
    raw["data"]["energy_units_to_eV"] = 2.0  # the same frames, energies doubled
    config = validate_config(raw)
    source = load_source_model(config)
    model_config, datamodule = resolve_model(config, source)
    assert model_config["per_type_energy_shifts"] == datamodule.statistics()["per_type_energy_shifts"]
    assert model_config["per_type_energy_shifts"] != source.config["per_type_energy_shifts"]
    assert {k: v for k, v in model_config.items() if k != "per_type_energy_shifts"} == {
        k: v for k, v in source.config.items() if k != "per_type_energy_shifts"
    }


def test_test_frames_are_evaluated_with_the_best_checkpoint(tiny_data, tmp_path, capsys):
    split = {"train": 6, "val": 2, "test": 2, "seed": 1}
    train(validate_config(config_dict(tiny_data, tmp_path / "out", split=split, max_epochs=1)))
    table = capsys.readouterr().out
    assert "test_forces_mae" in table and "test_energy_per_atom_mae" in table
