"""Training options that change how a run learns, each run once on the tiny model: the Huber
loss, AdamW, no learning-rate scheduler, data loaded in worker processes."""

import ase.io
import pytest
import torch

from fixtures.training import TYPE_NAMES, training_config
from nequip.data import TypeMapper, batch_frames, from_ase, read_frames
from nequip.load import ModelFromCheckpoint
from nequip.train import load_checkpoint, train, validate_config

from .helpers import logged_column


def test_huber_loss_is_the_loss_validation_reports(tiny_data, tmp_path):
    frames = ase.io.read(tiny_data, index=":")
    train_file, val_file = tmp_path / "train.xyz", tmp_path / "val.xyz"
    ase.io.write(train_file, frames[:6])
    ase.io.write(val_file, frames[6:8])  # one validation batch
    raw = training_config(train_file, tmp_path / "out", max_epochs=1, loss={"function": "huber", "huber_delta": 0.05})
    raw["data"] = dict(raw["data"], file=None, split=None, train_file=str(train_file), val_file=str(val_file))
    train(validate_config(raw))

    # the validated model (EMA weights: best.ckpt) on the validation frames, Huber by torch
    model = ModelFromCheckpoint(tmp_path / "out" / "best.ckpt")
    batch = batch_frames([from_ase(atoms, TypeMapper(TYPE_NAMES), model.r_max) for atoms in read_frames(val_file)])
    out = model(batch)
    num_atoms = batch["num_atoms"].view(-1, 1).double()
    huber = torch.nn.functional.huber_loss
    expected = huber(out["total_energy"] / num_atoms, batch["total_energy"] / num_atoms, delta=0.05) + huber(
        out["forces"], batch["forces"], delta=0.05
    )
    mse = torch.nn.functional.mse_loss(out["forces"], batch["forces"]) + torch.nn.functional.mse_loss(
        out["total_energy"] / num_atoms, batch["total_energy"] / num_atoms
    )
    (logged,) = logged_column(tmp_path / "out", "val_loss")
    assert logged == pytest.approx(float(expected), rel=1e-9)
    assert logged != pytest.approx(float(mse), rel=1e-3)


def test_adamw_decouples_the_weight_decay(tiny_data, tmp_path):
    raw = training_config(tiny_data, tmp_path / "out", max_epochs=1, optimizer={"name": "adamw", "weight_decay": 0.1})
    train(validate_config(raw))
    checkpoint = load_checkpoint(tmp_path / "out" / "last.ckpt")
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    assert group["decoupled_weight_decay"] is True and group["weight_decay"] == 0.1
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_without_a_scheduler_the_learning_rate_stays(tiny_data, tmp_path):
    raw = training_config(tiny_data, tmp_path / "out", max_epochs=3, lr_scheduler=None, optimizer={"lr": 0.002})
    train(validate_config(raw))
    assert load_checkpoint(tmp_path / "out" / "last.ckpt")["lr_schedulers"] == []
    assert logged_column(tmp_path / "out", "lr-Adam") == [0.002] * 3


def test_data_loaded_in_worker_processes_trains_the_same_weights(tiny_data, trained_run, tmp_path):
    raw = training_config(tiny_data, tmp_path / "out")
    raw["data"]["num_workers"] = 1
    train(validate_config(raw))
    in_workers = load_checkpoint(tmp_path / "out" / "last.ckpt")
    in_process = load_checkpoint(trained_run / "last.ckpt")  # the same run, data loaded in the process
    assert in_workers["global_step"] == in_process["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        for name, value in in_process[key].items():
            assert torch.equal(in_workers[key][name], value), (key, name)
