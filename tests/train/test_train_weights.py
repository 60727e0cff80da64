"""Loss weights of frames (data.frame_weight_key, data.config_type_weights), types
(loss.per_type_forces) and atoms (data.force_weight_key): each reaches the loss exactly (a
weight of 0 is the row left out, 2 the row counted twice, for MSE), the metrics stay
unweighted, and the weights are in the run's resolved configuration."""

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator

from nequip.data import keys
from nequip.scripts.train import main as nequip_train
from nequip.train import ConfigError, load_checkpoint, train, validate_config
from nequip.train.lightning_module import NequIPLightningModule
from nequip.train.metrics import ErrorMetrics
from nequip.train.training import build_datamodule

from fixtures.training import TINY_MODEL, TYPE_NAMES, make_emt_data, training_config

# statistics given, so that the data the runs compare do not change where the model starts
FIXED_MODEL = dict(
    TINY_MODEL, model_dtype="float64", avg_num_neighbors=12.0, per_type_energy_shifts=[-0.1, 0.2],
    per_type_energy_scales=[0.4, 0.6],
)  # fmt: skip


def emt_frames(count=6, seed=3):
    return make_emt_data().make_emt_frames(n_frames=count, seed=seed, repeat=(1, 1, 2))


def labelled_copy(atoms):
    copy = atoms.copy()
    copy.calc = SinglePointCalculator(copy, **atoms.calc.results)
    return copy


def write(frames, path, weights=None, config_types=None, force_weights=None):
    """``frames`` (copies, the fixture's stay as they are) with the weights given, to ``path``."""
    frames = [labelled_copy(atoms) for atoms in frames]
    for index, atoms in enumerate(frames):
        if weights is not None:
            atoms.info["weight"] = float(weights[index])
        if config_types is not None:
            atoms.info["config_type"] = config_types[index]
        if force_weights is not None:
            atoms.arrays["force_weight"] = np.asarray(force_weights[index], dtype=np.float64)
    ase.io.write(path, frames, format="extxyz")
    return path


def run_config(train_file, val_file, output_dir, **sections):
    """One batch per epoch (the whole training set), so that the frames of a step are all of them."""
    config = training_config(train_file, output_dir, model=FIXED_MODEL, max_epochs=2, ema=None, **sections)
    config["data"] = {"type_names": TYPE_NAMES, "train_file": str(train_file), "val_file": str(val_file),
                      "batch_size": 16, **sections.get("data", {})}  # fmt: skip
    return config


def final_weights(output_dir):
    return load_checkpoint(output_dir / "last.ckpt")["state_dict"]


def assert_same_training(a, b):
    first, second = final_weights(a), final_weights(b)
    assert first.keys() == second.keys()
    moved = False
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-9, atol=1e-12, msg=name)
        moved = moved or not torch.equal(first[name], second[name])
    return moved


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")
    frames = emt_frames()
    return directory, frames[:4], write(frames[4:], directory / "val.xyz")


def test_a_frame_of_weight_zero_trains_as_the_frame_left_out(frames, tmp_path):
    directory, train_frames, val = frames
    weighted = write(train_frames, tmp_path / "weighted.xyz", weights=[1, 0, 1, 1])
    removed = write([train_frames[i] for i in (0, 2, 3)], tmp_path / "removed.xyz")
    train(validate_config(run_config(weighted, val, tmp_path / "a", data={"frame_weight_key": "weight"})))
    train(validate_config(run_config(removed, val, tmp_path / "b")))
    assert_same_training(tmp_path / "a", tmp_path / "b")
    # and the weight mattered: without it the run is another one
    train(validate_config(run_config(write(train_frames, tmp_path / "all.xyz"), val, tmp_path / "c")))
    with pytest.raises(AssertionError):
        assert_same_training(tmp_path / "a", tmp_path / "c")


def test_a_frame_of_weight_two_trains_as_the_frame_twice(frames, tmp_path):
    directory, train_frames, val = frames
    weighted = write(train_frames, tmp_path / "weighted.xyz", weights=[1, 2, 1, 1])
    twice = write(train_frames + [train_frames[1]], tmp_path / "twice.xyz")
    train(validate_config(run_config(weighted, val, tmp_path / "a", data={"frame_weight_key": "weight"})))
    train(validate_config(run_config(twice, val, tmp_path / "b")))
    assert_same_training(tmp_path / "a", tmp_path / "b")


def test_config_type_weights_are_frame_weights(frames, tmp_path):
    """{surface: 0} is the surface frame left out; frames of other config types weigh 1."""
    directory, train_frames, val = frames
    typed = write(train_frames, tmp_path / "typed.xyz", config_types=["bulk", "surface", "bulk", "defect"])
    removed = write([train_frames[i] for i in (0, 2, 3)], tmp_path / "removed.xyz")
    train(validate_config(run_config(typed, val, tmp_path / "a", data={"config_type_weights": {"surface": 0.0}})))
    train(validate_config(run_config(removed, val, tmp_path / "b")))
    assert_same_training(tmp_path / "a", tmp_path / "b")


# -- the loss of one batch, against the loss written out here ------------------------------


@pytest.fixture
def batch_and_module(frames, tmp_path):
    """A module (tiny model, MSE) and a batch of the four training frames with their outputs."""
    directory, train_frames, val = frames
    force_weights = [np.ones(len(atoms)) for atoms in train_frames]
    force_weights[2][[1, 5]] = [0.0, 2.0]
    path = write(train_frames, tmp_path / "w.xyz", weights=[1, 0, 2, 1], force_weights=force_weights)

    def make(**loss):
        raw = run_config(path, val, tmp_path / "out", data={"frame_weight_key": "weight", "force_weight_key": "force_weight"},
                         loss={"stress": 1.0, **loss})  # fmt: skip
        config = validate_config(raw)
        datamodule = build_datamodule(config, dict(FIXED_MODEL, type_names=TYPE_NAMES, per_edge_type_cutoff=None))
        from nequip.train.config import config_to_dict
        from nequip.model import build_model

        model_config = build_model(dict(FIXED_MODEL, type_names=TYPE_NAMES)).config
        module = NequIPLightningModule(model_config, config_to_dict(config))
        batch = next(iter(datamodule.train_dataloader()))
        module.train()
        return module, batch, module(batch)

    return make


def mse(predicted, reference):
    return float(((predicted - reference) ** 2).mean())


def test_loss_terms_are_the_mse_of_the_rows_as_weighted(batch_and_module):
    """Frame weights [1, 0, 2, 1], one atom's force weight 0 and another's 2, Au forces 3x:
    each term is the plain MSE over the rows repeated as often as they weigh."""
    module, batch, out = batch_and_module(per_type_forces={"Au": 3.0})
    terms = module.loss(batch, out)
    frame_weight = batch[keys.FRAME_WEIGHT].long()
    order = batch[keys.FRAME_WEIGHT]  # the batch's frames are shuffled: weights travel with them
    repeat_frames = torch.repeat_interleave(torch.arange(len(order)), frame_weight)
    energy = (out[keys.TOTAL_ENERGY] / batch[keys.NUM_ATOMS].unsqueeze(-1)).detach()
    reference = batch[keys.TOTAL_ENERGY] / batch[keys.NUM_ATOMS].unsqueeze(-1)
    assert float(terms["loss_energy_per_atom"]) == pytest.approx(mse(energy[repeat_frames], reference[repeat_frames]), rel=1e-12)
    assert float(terms["loss_stress"]) == pytest.approx(
        mse(out[keys.STRESS].detach()[repeat_frames], batch[keys.STRESS][repeat_frames]), rel=1e-12
    )
    atom_weight = (frame_weight[batch[keys.BATCH]] * batch[keys.FORCE_WEIGHT].long()
                   * torch.where(batch[keys.ATOM_TYPES] == TYPE_NAMES.index("Au"), 3, 1))  # fmt: skip
    assert set(batch[keys.FORCE_WEIGHT].tolist()) == {0.0, 1.0, 2.0}
    repeat_atoms = torch.repeat_interleave(torch.arange(len(atom_weight)), atom_weight)
    assert float(terms["loss_forces"]) == pytest.approx(
        mse(out[keys.FORCES].detach()[repeat_atoms], batch[keys.FORCES][repeat_atoms]), rel=1e-12
    )


def test_a_type_of_weight_zero_leaves_its_forces_out_of_the_loss(batch_and_module):
    module, batch, out = batch_and_module(per_type_forces={"Cu": 0.0})
    loss = float(module.loss(batch, out)["loss_forces"])
    weight = (batch[keys.FRAME_WEIGHT][batch[keys.BATCH]] * batch[keys.FORCE_WEIGHT]).long()
    weight[batch[keys.ATOM_TYPES] == TYPE_NAMES.index("Cu")] = 0
    rows = torch.repeat_interleave(torch.arange(len(weight)), weight)
    assert loss == pytest.approx(mse(out[keys.FORCES].detach()[rows], batch[keys.FORCES][rows]), rel=1e-12)


def test_metrics_are_not_weighted(batch_and_module):
    module, batch, out = batch_and_module(per_type_forces={"Au": 5.0})
    weighted, plain = ErrorMetrics(["energy_per_atom", "forces", "stress"], TYPE_NAMES), ErrorMetrics(
        ["energy_per_atom", "forces", "stress"], TYPE_NAMES
    )
    weighted.update(batch, out)
    plain.update({k: v for k, v in batch.items() if k not in (keys.FRAME_WEIGHT, keys.FORCE_WEIGHT)}, out)
    for row, values in plain.compute().items():
        assert float(weighted.compute()[row]["mae"]) == float(values["mae"])
    error = (out[keys.FORCES].detach() - batch[keys.FORCES]).abs().mean()
    assert float(plain.compute()["forces"]["mae"]) == pytest.approx(float(error), rel=1e-12)


def test_the_weights_are_in_the_resolved_config(frames, tmp_path):
    directory, train_frames, val = frames
    path = write(train_frames, tmp_path / "w.xyz", weights=[1, 0.5, 2, 1], config_types=["a", "b", "a", "b"])
    raw = run_config(path, val, tmp_path / "out", data={"frame_weight_key": "weight", "config_type_weights": {"b": 3.0}},
                     loss={"per_type_forces": {"Au": 2.0}})  # fmt: skip
    raw["trainer"]["max_epochs"] = 1
    train(validate_config(raw))
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["data"]["frame_weight_key"] == "weight"
    assert written["data"]["config_type_weights"] == {"b": 3.0}
    assert written["loss"]["per_type_forces"] == {"Au": 2.0}


# -- bad weights: one message, before anything is written ----------------------------------


@pytest.mark.parametrize(
    "data, loss, code, message",
    [
        ({"frame_weight_key": "w"}, {}, 2, "data.frame_weight_key: no training frame has the info 'w'; give the name the data uses"),
        ({"frame_weight_key": "weight"}, {}, 1, "{train}: frame 1: info['weight'] must be a finite number >= 0 (data.frame_weight_key), got -1.0"),
        ({"force_weight_key": "fw"}, {}, 2, "data.force_weight_key: no training frame has the per-atom array 'fw'; give the name the data uses"),
        ({"config_type_weights": {"defects": 2.0}}, {}, 2, "data.config_type_weights: no frame has config_type 'defects' (the frames' config types: none); give config types of the data (atoms.info['config_type'])"),
        ({}, {"per_type_forces": {"Ag": 2.0}}, 2, "loss.per_type_forces: unknown type 'Ag'; the model's types are ['Cu', 'Au']"),
        ({}, {"per_type_forces": {"Cu": -1.0}}, 2, "loss.per_type_forces: the weight of 'Cu' must be a finite number >= 0, got -1.0"),
    ],
)  # fmt: skip
def test_bad_weights_are_one_message_and_nothing_is_written(frames, tmp_path, capsys, data, loss, code, message):
    directory, train_frames, val = frames
    path = write(train_frames, tmp_path / "bad.xyz", weights=[1, -1, 1, 1])
    raw = run_config(path, val, tmp_path / "out", data=data, loss=loss)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert nequip_train([str(config)]) == code
    assert message.format(train=path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
