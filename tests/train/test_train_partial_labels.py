"""Partly labelled data: a frame that lacks a label (a molecule without stress, a frame without
energy or forces) adds no loss term for it, the loss of each term is normalised by the frames
(atoms) that have it, the metrics count only those, and a learned label that no training frame
has is one clear error."""

import ase
import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from nequip.data import keys
from nequip.model import build_model
from nequip.scripts.train import main as nequip_train
from nequip.train import train, validate_config
from nequip.train.config import config_to_dict
from nequip.train.lightning_module import NequIPLightningModule
from nequip.train.metrics import ErrorMetrics
from nequip.train.training import build_datamodule

from fixtures.training import TYPE_NAMES

from .helpers import logged_column
from .test_train_weights import FIXED_MODEL, assert_same_training, emt_frames, labelled_copy, run_config


def molecule(seed: int) -> ase.Atoms:
    """A non-periodic Cu/Au cluster of 6 atoms with EMT energy and forces, and no stress."""
    rng = np.random.default_rng(seed)
    positions = 2.5 * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]], dtype=float)
    atoms = ase.Atoms(["Cu", "Au", "Cu", "Au", "Cu", "Cu"], positions + rng.normal(scale=0.05, size=(6, 3)))
    atoms.calc = EMT()
    labels = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


def without(atoms: ase.Atoms, *labels: str) -> ase.Atoms:
    """A copy of a labelled frame without ``labels`` (ASE's names: energy, forces, stress)."""
    copy = labelled_copy(atoms)
    copy.calc = SinglePointCalculator(copy, **{k: v for k, v in atoms.calc.results.items() if k not in labels})
    return copy


@pytest.fixture(scope="module")
def periodic():
    return emt_frames(count=6, seed=5)


def write(frames, path):
    ase.io.write(path, frames, format="extxyz")
    return path


def test_a_mixed_dataset_learns_the_stress_of_the_frames_that_have_it(periodic, tmp_path, caplog):
    """Periodic frames with stress and molecules without: the stress loss of a batch is that of
    its periodic frames, so with only stress learned the run is the one without the molecules."""
    mixed = write(periodic[:4] + [molecule(0), molecule(1)], tmp_path / "mixed.xyz")
    val = write(periodic[4:] + [molecule(2)], tmp_path / "val.xyz")
    alone = write(periodic[:4], tmp_path / "periodic.xyz")
    stress_only = {"energy_per_atom": 0.0, "forces": 0.0, "stress": 1.0}
    train(validate_config(run_config(mixed, val, tmp_path / "a", loss=stress_only)))
    assert "training frames with each label (of 6): energy 6, forces 6, stress 4" in caplog.text
    train(validate_config(run_config(alone, val, tmp_path / "b", loss=stress_only)))
    assert assert_same_training(tmp_path / "a", tmp_path / "b")  # and training moved the weights
    # the validation metrics count the frames with a stress only: finite, as the periodic frames'
    stress_mae = logged_column(tmp_path / "a", "val_stress_mae")
    assert stress_mae and np.isfinite(stress_mae).all()
    assert stress_mae == pytest.approx(logged_column(tmp_path / "b", "val_stress_mae"), rel=1e-9)


def test_a_mixed_dataset_trains_every_label_it_has(periodic, tmp_path):
    mixed = write(periodic[:4] + [molecule(0), without(periodic[5], "energy")], tmp_path / "mixed.xyz")
    val = write(periodic[4:5] + [molecule(2)], tmp_path / "val.xyz")
    train(validate_config(run_config(mixed, val, tmp_path / "out", loss={"stress": 1.0})))
    for name in ("val_energy_per_atom_mae", "val_forces_mae", "val_stress_mae", "val_loss"):
        values = logged_column(tmp_path / "out", name)
        assert values and np.isfinite(values).all(), name


@pytest.fixture
def module_and_batch(periodic, tmp_path):
    """A module (tiny float64 model, MSE, every label learned) and one batch of: two periodic
    frames, a molecule (no stress), a frame without energy and one without forces."""
    frames = [periodic[0], periodic[1], molecule(0), without(periodic[2], "energy"), without(periodic[3], "forces")]
    path = write(frames, tmp_path / "partial.xyz")
    config = validate_config(run_config(path, path, tmp_path / "out", loss={"stress": 1.0}))
    datamodule = build_datamodule(config, dict(FIXED_MODEL, type_names=TYPE_NAMES, per_edge_type_cutoff=None))
    module = NequIPLightningModule(build_model(dict(FIXED_MODEL, type_names=TYPE_NAMES)).config, config_to_dict(config))
    batch = next(iter(datamodule.val_dataloader()))  # in file order
    return module, batch, module(batch), datamodule


def test_each_loss_term_is_the_mse_of_the_frames_that_have_the_label(module_and_batch):
    module, batch, out, datamodule = module_and_batch
    assert datamodule.label_counts("train") == {keys.TOTAL_ENERGY: 4, keys.FORCES: 4, keys.STRESS: 4}
    terms = module.loss(batch, out)
    per_atom = batch[keys.NUM_ATOMS].unsqueeze(-1)
    energy = (out[keys.TOTAL_ENERGY].detach() - batch[keys.TOTAL_ENERGY]) / per_atom
    assert float(terms["loss_energy_per_atom"]) == pytest.approx(float(energy[[0, 1, 2, 4]].square().mean()), rel=1e-12)
    stress = out[keys.STRESS].detach() - batch[keys.STRESS]
    assert float(terms["loss_stress"]) == pytest.approx(float(stress[[0, 1, 3, 4]].square().mean()), rel=1e-12)
    forces = out[keys.FORCES].detach() - batch[keys.FORCES]
    labelled_atoms = batch[keys.BATCH] != 4
    assert float(terms["loss_forces"]) == pytest.approx(float(forces[labelled_atoms].square().mean()), rel=1e-12)
    # and the gradients stay finite (the molecule's stress is NaN, its volume 0)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_the_metrics_count_only_the_frames_that_have_the_label(module_and_batch):
    module, batch, out, datamodule = module_and_batch
    metrics = ErrorMetrics(["energy_per_atom", "forces", "stress"], TYPE_NAMES)
    metrics.update(batch, out)
    assert int(metrics.energy_per_atom_count) == 4
    assert int(metrics.stress_count) == 4 * 9
    assert int(metrics.forces_count) == 3 * int((batch[keys.BATCH] != 4).sum())
    stress = (out[keys.STRESS].detach() - batch[keys.STRESS])[[0, 1, 3, 4]]
    assert float(metrics.compute()["stress"]["mae"]) == pytest.approx(float(stress.abs().mean()), rel=1e-12)


def test_a_learned_label_no_training_frame_has_is_one_message(periodic, tmp_path, capsys):
    train_file = write([molecule(0), molecule(1)], tmp_path / "molecules.xyz")
    raw = run_config(train_file, train_file, tmp_path / "out", loss={"stress": 1.0})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert nequip_train([str(config)]) == 2
    message = "loss.stress: no training frame has a stress label (0 of 2); add stress labels to the data or set loss.stress: 0"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
