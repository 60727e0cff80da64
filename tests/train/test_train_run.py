"""Training runs: learning, checkpoints, exact resumption, fine-tuning, damaged checkpoints."""


import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list
import yaml

from nequip.scripts.train import main as nequip_train
from nequip.train import AtomicCheckpointIO, CheckpointError, load_checkpoint, train, validate_config
from nequip.inference.evaluation import compute_metrics, predict
from nequip.inference import open_model
from nequip.load import ModelFromCheckpoint
from nequip.train.training import load_source_model, resolve_model
from nequip.data import read_frames

from fixtures.training import TYPE_NAMES, make_emt_data, training_config

from .helpers import logged_column


def _checkpoint_callback_state(checkpoint):
    (state,) = [value for key, value in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    return state


# a model that can learn in five epochs
SMALL_MODEL = dict(r_max=4.0, l_max=1, num_layers=2, num_features=8, radial_mlp_width=16)


@pytest.mark.slow
def test_training_cuts_force_error_on_held_out_frames(tmp_path):
    emt = make_emt_data()
    files = {}
    for name, frames, seed in (("train", 32, 1), ("val", 6, 2), ("test", 8, 3)):
        files[name] = tmp_path / f"{name}.xyz"
        emt.write_emt_data(files[name], n_frames=frames, seed=seed, repeat=(1, 1, 2))
    raw = training_config(files["train"], tmp_path / "out", model=SMALL_MODEL, max_epochs=5)
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
        train(validate_config(training_config(tiny_data, output_dir, max_epochs=3)))
    assert str(error.value) == f"cannot resume: {message}; delete it to start over"
    # refused before anything was written: the damaged file is as it was, and alone
    assert last.read_bytes() == damaged
    assert [p.name for p in output_dir.iterdir()] == ["last.ckpt"]

    # and as the starting point of fine-tuning, through the command line
    raw = training_config(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(last)})
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
    raw = training_config(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(source)}, max_epochs=1)
    del raw["data"]["type_names"]  # taken from the model
    train(validate_config(raw))

    source_checkpoint = load_checkpoint(source)
    source_val_loss = _checkpoint_callback_state(source_checkpoint)["best_model_score"].item()
    first_val_loss = logged_column(tmp_path / "fine", "val_loss")[0]
    assert first_val_loss == pytest.approx(source_val_loss, rel=1e-9, abs=0)
    fine_tuned = load_checkpoint(tmp_path / "fine" / "last.ckpt")
    assert fine_tuned["hyper_parameters"]["model_config"] == source_checkpoint["hyper_parameters"]["model_config"]


def test_refit_energy_shifts_takes_new_data_statistics(trained_run, tiny_data, tmp_path):
    raw = training_config(tiny_data, tmp_path / "fine", model={"from_checkpoint": str(trained_run / "best.ckpt"), "refit_energy_shifts": True})
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
    train(validate_config(training_config(tiny_data, tmp_path / "out", split=split, max_epochs=1)))
    table = capsys.readouterr().out
    assert "test_forces_mae" in table and "test_energy_per_atom_mae" in table


def _closest_pair_by_ase(frames, r_max):
    """The shortest distance between two atoms (periodic images included) within r_max, by ASE."""
    return min(float(neighbor_list("d", atoms, r_max).min()) for atoms in frames)


def _squeezed(frames, distance):
    """The frames with the first frame's atom 1 moved to ``distance`` Å from its atom 0 (labels kept)."""
    first = frames[0]
    labels = dict(energy=first.get_potential_energy(), forces=first.get_forces())
    direction = first.positions[1] - first.positions[0]
    first.positions[1] = first.positions[0] + distance * direction / np.linalg.norm(direction)
    first.calc = SinglePointCalculator(first, **labels)
    return frames


@pytest.fixture
def train_and_val_files(tiny_data, tmp_path):
    """Training frames whose closest pair is 1.8 Å, and validation frames with a closer one (1.5 Å)."""
    frames = ase.io.read(tiny_data, index=":")
    files = {"train": tmp_path / "train.xyz", "val": tmp_path / "val.xyz"}
    ase.io.write(files["train"], _squeezed(frames[:6], 1.8))
    ase.io.write(files["val"], _squeezed(frames[6:], 1.5))
    return files


def _separate_files_config(files, output_dir, **model):
    raw = training_config(files["train"], output_dir, model=model or None)
    raw["data"] = {"type_names": TYPE_NAMES, "train_file": str(files["train"]), "val_file": str(files["val"])}
    if model:
        del raw["data"]["type_names"]
    return raw


def test_closest_training_pair_is_the_shortest_distance_in_the_training_frames(train_and_val_files, tmp_path):
    config = validate_config(_separate_files_config(train_and_val_files, tmp_path / "out"))
    model_config, _ = resolve_model(config, None)
    expected = _closest_pair_by_ase(ase.io.read(train_and_val_files["train"], index=":"), config.model.r_max)
    assert expected == pytest.approx(1.8, abs=1e-7)  # the squeezed pair (extxyz keeps 8 decimals), not the validation frames' 1.5 Å
    assert model_config["closest_training_pair"] == pytest.approx(expected, rel=1e-12)


def test_closest_training_pair_is_recorded_in_checkpoints_and_metadata(trained_run):
    recorded = load_checkpoint(trained_run / "best.ckpt")["hyper_parameters"]["model_config"]["closest_training_pair"]
    assert 2.0 < recorded < 3.0  # Cu/Au nearest neighbors, rattled
    metadata = ModelFromCheckpoint(trained_run / "best.ckpt").metadata()
    assert float(metadata["closest_training_pair"]) == recorded


@pytest.mark.parametrize("parent, expected", [(None, 1.8), (1.2, 1.2), (2.5, 1.8)])
def test_fine_tuning_records_the_closer_of_the_parents_and_the_new_datas_closest_pair(
    trained_run, train_and_val_files, tmp_path, parent, expected
):
    checkpoint = torch.load(trained_run / "best.ckpt", weights_only=True)
    # None: a checkpoint written before the record existed, which still loads
    if parent is None:
        del checkpoint["hyper_parameters"]["model_config"]["closest_training_pair"]
    else:
        checkpoint["hyper_parameters"]["model_config"]["closest_training_pair"] = parent
    source_path = tmp_path / "parent.ckpt"
    torch.save(checkpoint, source_path)
    source = ModelFromCheckpoint(source_path)
    assert ("closest_training_pair" in source.metadata()) == (parent is not None)

    config = validate_config(_separate_files_config(train_and_val_files, tmp_path / "fine", from_checkpoint=str(source_path)))
    model_config, _ = resolve_model(config, load_source_model(config))
    assert model_config["closest_training_pair"] == pytest.approx(expected, abs=1e-7)
