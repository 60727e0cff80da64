"""Training configurations of the other NequIP release: refused by nequip-train with one message
pointing to ``nequip-train --convert``, which maps the keys of that release's tutorial-shaped and
minimal-shaped configs and lists each key it cannot map."""

import subprocess
import sys

import yaml

from fixtures.foreign_packages import FOREIGN_DIR
from nequip.ecosystem.config import convert_config
from nequip.scripts.train import main as nequip_train

# the shape of that release's minimal config: a dataset class instead of a file, resolvers,
# a loss-coefficient schedule, a test-time writer, stress in the loss
MINIMAL = """\
run: [train, test]
seed: 1
cutoff_radius: 5.0
model_type_names: [Cu]
chemical_species: ${model_type_names}
num_features: 16
dataloader:
  _target_: torch.utils.data.DataLoader
  batch_size: 5
data:
  _target_: nequip.data.datamodule.NequIPDataModule
  seed: ${seed}
  split_dataset:
    dataset:
      _target_: nequip.data.dataset.EMTTestDataset
      supercell: [4, 4, 4]
    train: 30
    val: 10
    test: 10
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${model_type_names}
      chemical_species_to_atom_type_map: ${list_to_identity_dict:${chemical_species}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${cutoff_radius}
  train_dataloader: ${dataloader}
  val_dataloader: ${dataloader}
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${model_type_names}
trainer:
  _target_: lightning.Trainer
  max_epochs: 5
  check_val_every_n_epoch: 1
  callbacks:
    - _target_: lightning.pytorch.callbacks.EarlyStopping
      monitor: val0_epoch/weighted_sum
      patience: 20
      min_delta: 1e-3
    - _target_: nequip.train.callbacks.LossCoefficientScheduler
      schedule: {2: {forces_mse: 2.0}}
training_module:
  _target_: nequip.train.NequIPLightningModule
  loss:
    _target_: nequip.train.EnergyForceStressLoss
    per_atom_energy: true
    coeffs: {total_energy: 1.0, forces: 1.0, stress: 0.5}
  optimizer:
    _target_: torch.optim.AdamW
    lr: 0.005
  model:
    _target_: nequip.model.NequIPGNNModel
    seed: ${seed}
    model_dtype: float64
    type_names: ${model_type_names}
    r_max: ${cutoff_radius}
    l_max: 1
    num_layers: 3
    num_features: ${num_features}
    radial_mlp_width: ${int_div:${num_features},2}
    avg_num_neighbors: ${training_data_stats:num_neighbors_mean}
    per_type_energy_shifts: {Cu: -3.5}
    pair_potential:
      _target_: nequip.nn.pair_potential.ZBL
      units: metal
"""


def test_their_tutorial_shaped_config_converts_to_ours(capsys):
    source = FOREIGN_DIR / "cuau_float64.train.yaml"
    assert nequip_train(["--convert", str(source)]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out) == {
        "output_dir": "results/cuau_float64.train",
        "data": {
            "file": "cuau_emt.xyz",
            "split": {"train": 0.75, "val": 0.25, "seed": 456},
            "type_names": ["Cu", "Au"],
            "batch_size": 2,
            "val_batch_size": 2,
        },
        "model": {"r_max": 4.0, "model_dtype": "float64", "num_bessels": 4, "polynomial_cutoff_p": 6,
                  "num_layers": 2, "l_max": 1, "parity": True, "num_features": 4, "radial_mlp_depth": 1,
                  "radial_mlp_width": 8},  # fmt: skip
        "loss": {"energy_per_atom": 1.0, "forces": 1.0, "stress": 0.0},
        "optimizer": {"name": "adam", "lr": 0.01},
        "lr_scheduler": {"name": "reduce_on_plateau", "factor": 0.6, "patience": 5},
        "ema": {"decay": 0.99},
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "seed": 123},
    }
    assert captured.err.splitlines() == [
        "nequip-train: not mapped: data.stats_manager: ours computes the statistics it needs from the training data",
        "nequip-train: not mapped: trainer.logger: ours logs to CSV (and TensorBoard when installed) in output_dir/logs",
        "nequip-train: not mapped: training_module.val_metrics: ours reports the MAE and RMSE of each learned "
        "quantity and monitors the validation loss",
    ]
    assert captured.out.startswith("# converted from cuau_float64.train.yaml (a configuration of the other NequIP")


def test_their_minimal_shaped_config_converts_and_lists_what_it_cannot_map(tmp_path):
    source = tmp_path / "minimal.yaml"
    source.write_text(MINIMAL)
    text, unmapped = convert_config(source)
    ours = yaml.safe_load(text)
    assert ours["data"] == {"split": {"train": 30, "val": 10, "test": 10, "seed": 1}, "type_names": ["Cu"],
                            "batch_size": 5, "val_batch_size": 5}  # fmt: skip
    assert ours["model"] == {"r_max": 5.0, "model_dtype": "float64", "l_max": 1, "num_layers": 3,
                             "num_features": 16, "radial_mlp_width": 8, "per_type_energy_shifts": {"Cu": -3.5}}  # fmt: skip
    assert ours["loss"] == {"energy_per_atom": 1.0, "forces": 1.0, "stress": 0.5}
    assert ours["optimizer"] == {"name": "adamw", "lr": 0.005}
    assert ours["ema"] is None
    assert ours["early_stopping"] == {"patience": 20, "min_delta": 0.001}
    assert ours["trainer"] == {"max_epochs": 5, "check_val_every_n_epoch": 1, "seed": 1}
    assert unmapped == [
        "data.split_dataset.dataset: ours reads one data file by ASE (split_dataset.file_path)",
        "data.stats_manager: ours computes the statistics it needs from the training data",
        "trainer.callbacks[1]: the callback nequip.train.callbacks.LossCoefficientScheduler has no counterpart",
        "training_module.model.pair_potential: no counterpart in our NequIP model",
        "still to do: data.split: only used with data.file",
    ]
    assert "#   training_module.model.pair_potential: no counterpart in our NequIP model\n" in text


def test_nequip_train_refuses_their_config_pointing_to_the_converter(tmp_path):
    source = tmp_path / "their.yaml"
    source.write_text(MINIMAL)
    result = subprocess.run([sys.executable, "-m", "nequip.scripts.train", str(source)], capture_output=True,
                            text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"nequip-train: {source} is a configuration of another NequIP release (Hydra, with '_target_' keys), which "
        f"nequip-train does not read; convert it: nequip-train --convert {source} > ours.yaml (it lists each key "
        "it cannot map)\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["their.yaml"]
