"""Build and compile the benchmark model with the reference release (nequip 0.19.1).

Runs inside build/reference-venv (never in ours). It goes through the reference's own
user workflow, so what is timed is what its users get:

  1. a tiny training set (3C-SiC, 64 atoms, 3 rattled frames, placeholder labels) as extxyz;
  2. ``nequip-train`` with the benchmark architecture for one epoch at learning rate 0, so the
     checkpoint holds the freshly initialised (random) weights;
  3. ``nequip-compile <ckpt> <out>.nequip.pt2 --mode aotinductor --device cpu --target ase``.

Usage (from our venv, compare_reference.py does it):
    build/reference-venv/bin/python benchmarks/dev/reference/build_reference.py WORKDIR
Prints one JSON line: the checkpoint, the compiled file, the exact config and commands.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHITECTURE = dict(
    num_layers=4,
    l_max=2,
    parity=True,
    num_features=32,
    r_max=5.0,
    num_bessels=8,
    polynomial_cutoff_p=6,
    radial_mlp_depth=2,
    radial_mlp_width=64,
    model_dtype="float32",
    type_names=["Si", "C"],
    avg_num_neighbors=40.0,
)

CONFIG = """\
run: [train]

seed: 0
cutoff_radius: {r_max}
model_type_names: [Si, C]
chemical_species: [Si, C]

data:
  _target_: nequip.data.datamodule.ASEDataModule
  seed: ${{seed}}
  train_file_path: {data}
  val_file_path: {data}
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${{model_type_names}}
      chemical_species_to_atom_type_map: {{Si: Si, C: C}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${{cutoff_radius}}
  train_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 1
  val_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 1
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}

trainer:
  _target_: lightning.Trainer
  accelerator: cpu
  max_epochs: 1
  enable_progress_bar: false
  logger: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      dirpath: ${{hydra:runtime.output_dir}}
      save_last: true

training_module:
  _target_: nequip.train.NequIPLightningModule
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs:
      total_energy: 1.0
      forces: 1.0
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs:
      total_energy_mae: 1.0
      forces_mae: 1.0
  optimizer:
    _target_: torch.optim.SGD
    lr: 0.0
  model:
    _target_: nequip.model.NequIPGNNModel
    seed: ${{seed}}
    model_dtype: {model_dtype}
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    l_max: {l_max}
    parity: {parity}
    num_layers: {num_layers}
    num_features: {num_features}
    num_bessels: {num_bessels}
    polynomial_cutoff_p: {polynomial_cutoff_p}
    radial_mlp_depth: {radial_mlp_depth}
    radial_mlp_width: {radial_mlp_width}
    avg_num_neighbors: {avg_num_neighbors}
    per_type_energy_shifts: {{Si: 0.0, C: 0.0}}
    per_type_energy_scales: {{Si: 1.0, C: 1.0}}
"""


def write_training_data(path: Path) -> None:
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    frames = []
    for seed in range(3):
        atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed)
        # placeholder labels: the learning rate is 0, only the shapes matter
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3))
        )
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def run(command, cwd, log):
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    subprocess.run(command, cwd=cwd, check=True, stdout=log, stderr=subprocess.STDOUT)


def main():
    workdir = Path(sys.argv[1]).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    data = workdir / "sic64.xyz"
    write_training_data(data)
    config_text = CONFIG.format(data=data, **ARCHITECTURE)
    (workdir / "config.yaml").write_text(config_text)
    train_dir = workdir / "train"
    out = workdir / "reference.nequip.pt2"
    train_command = [
        str(bindir / "nequip-train"), "-cp", str(workdir), "-cn", "config", f"hydra.run.dir={train_dir}",
    ]
    timings = {}
    with open(workdir / "build.log", "w") as log:
        start = time.perf_counter()
        run(train_command, workdir, log)
        timings["train_s"] = time.perf_counter() - start
        checkpoint = train_dir / "last.ckpt"
        compile_command = [
            str(bindir / "nequip-compile"), str(checkpoint), str(out),
            "--mode", "aotinductor", "--device", "cpu", "--target", "ase",
        ]
        start = time.perf_counter()
        run(compile_command, workdir, log)
        timings["compile_s"] = time.perf_counter() - start

    import nequip
    import torch

    print(json.dumps(dict(
        compiled=str(out),
        checkpoint=str(checkpoint),
        architecture=ARCHITECTURE,
        config_yaml=config_text,
        train_command=" ".join(train_command),
        compile_command=" ".join(compile_command),
        reference_version=nequip.__version__,
        torch=torch.__version__,
        **timings,
    )))


if __name__ == "__main__":
    main()
