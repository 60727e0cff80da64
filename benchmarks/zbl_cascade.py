"""A collision cascade in Cu with and without ZBL repulsion: one atom at 1 keV into a small fcc
cell, NVE in ASE, with the same trained weights, and EMT (the potential the model learned) as
the reference.

    .venv/bin/python benchmarks/zbl_cascade.py --out-dir build/zbl_cascade --json docs/zbl_cascade.json

The model is trained here (``--epochs`` on EMT Cu/Au frames from examples/make_emt_data.py,
``model.zbl: true``), or given (``--checkpoint``, a model with ZBL). ZBL is zero on every
training edge (its default outer radius for Cu-Cu is 1.98 Å, the training frames' closest pairs
are about 2.2 Å), so the same weights without it are the model trained without it: the
"without" run is that checkpoint with ``zbl`` taken out of its model config.

The primary knock-on atom (PKA) starts at ``--energy`` eV towards its nearest neighbor along
[110] (tilted by a few degrees): a near head-on collision, the hardest case for the short range.
The other atoms start at ``--temperature``. Velocity Verlet with an adaptive step, as cascade
codes use: each step ``dt = min(--max-dt, --max-move / v_max)``, so no atom moves more than
``--max-move`` Å per step. Reported per run: the largest deviation of the total energy from its
start (eV, and per atom), the closest approach of any two atoms, whether everything stayed
finite, and the number of steps.
"""

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

REPO = Path(__file__).resolve().parents[1]
CU_LATTICE_A = 3.61
PKA_DIRECTION = np.array([1.0, 1.0, 0.15])


def make_emt_data():
    spec = importlib.util.spec_from_file_location("make_emt_data", REPO / "examples" / "make_emt_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_model(directory: Path, epochs: int, frames: int, seed: int = 0, model: Optional[dict] = None) -> Path:
    """Train a model with ZBL on EMT Cu/Au frames (examples/minimal.yaml's kind, smaller);
    return its best checkpoint."""
    from nequip.train import train, validate_config

    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "emt.xyz"
    make_emt_data().write_emt_data(data, n_frames=frames, seed=seed)
    config = {
        "output_dir": str(directory / "run"),
        "data": {"type_names": ["Cu", "Au"], "file": str(data),
                 "split": {"train": frames - max(2, frames // 5), "val": max(2, frames // 5), "seed": seed},
                 "batch_size": 2},
        "model": model or {"r_max": 4.5, "l_max": 1, "num_layers": 2, "num_features": 8, "num_bessels": 8,
                           "radial_mlp_width": 16, "model_dtype": "float64", "zbl": True},
        "loss": {"energy_per_atom": 100.0, "forces": 1.0, "stress": 100.0},
        "optimizer": {"lr": 0.01},
        "trainer": {"max_epochs": epochs, "seed": seed, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False},
    }  # fmt: skip
    train(validate_config(config))
    return directory / "run" / "best.ckpt"


def without_zbl(checkpoint: Path, out: Path) -> Path:
    """The checkpoint's weights with ZBL taken out of its model config (the ZBL parameters are
    not weights: the state dict is the same)."""
    from nequip.load import load_checkpoint
    from nequip.utils.atomic_io import atomic_open

    saved = load_checkpoint(checkpoint)
    if saved["hyper_parameters"]["model_config"].get("zbl") is None:
        raise ValueError(f"{checkpoint}: its model has no ZBL (model_config.zbl); train one with model.zbl: true")
    saved["hyper_parameters"]["model_config"] = dict(saved["hyper_parameters"]["model_config"], zbl=None)
    with atomic_open(out, "wb") as file:
        torch.save(saved, file)
    return out


def cascade_cell(cells: int, temperature_K: float, energy_eV: float, seed: int):
    """fcc Cu, ``cells``³ conventional cells, thermal velocities, and atom 0 the PKA."""
    atoms = bulk("Cu", "fcc", a=CU_LATTICE_A, cubic=True).repeat(cells)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    velocities = atoms.get_velocities()
    direction = PKA_DIRECTION / np.linalg.norm(PKA_DIRECTION)
    velocities[0] = direction * math.sqrt(2 * energy_eV / atoms.get_masses()[0])  # ASE units: sqrt(eV/amu)
    atoms.set_velocities(velocities)
    return atoms


def closest_pair(atoms) -> float:
    """The shortest distance between two atoms of a periodic orthorhombic cell (minimum image)."""
    lengths = np.diag(atoms.cell.array)
    delta = atoms.positions[:, None, :] - atoms.positions[None, :, :]
    delta -= lengths * np.round(delta / lengths)
    distances = np.linalg.norm(delta, axis=-1)
    return float(distances[np.triu_indices(len(atoms), 1)].min())


def run_cascade(calculator, cells: int = 3, energy_eV: float = 1000.0, duration_fs: float = 300.0,
                max_move_A: float = 0.01, max_dt_fs: float = 1.0, temperature_K: float = 300.0,
                seed: int = 0) -> Dict:  # fmt: skip
    """One cascade (see the module docstring); the figures as a dict."""
    atoms = cascade_cell(cells, temperature_K, energy_eV, seed)
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep=max_dt_fs * units.fs)
    start = time.perf_counter()
    initial = atoms.get_total_energy()
    times, deviations, closest = [0.0], [0.0], [closest_pair(atoms)]
    elapsed_fs, steps, finite = 0.0, 0, True
    while elapsed_fs < duration_fs:
        speed = np.linalg.norm(atoms.get_velocities(), axis=1).max() / (units.Ang / units.fs)  # Å/fs
        dt_fs = min(max_dt_fs, max_move_A / speed, duration_fs - elapsed_fs)
        dynamics.dt = dt_fs * units.fs
        dynamics.run(1)
        elapsed_fs += dt_fs
        steps += 1
        energy = atoms.get_total_energy()
        if not (np.isfinite(energy) and np.isfinite(atoms.positions).all()):
            finite = False
            break
        times.append(elapsed_fs)
        deviations.append(energy - initial)
        closest.append(closest_pair(atoms))
    deviations = np.array(deviations)
    return {
        "atoms": len(atoms),
        "pka_energy_eV": energy_eV,
        "duration_fs": elapsed_fs,
        "steps": steps,
        "finite": finite,
        "max_energy_deviation_eV": float(np.abs(deviations).max()),
        "max_energy_deviation_meV_per_atom": float(np.abs(deviations).max() / len(atoms) * 1e3),
        "final_energy_deviation_eV": float(deviations[-1]),
        "closest_approach_A": float(min(closest)),
        "final_temperature_K": float(atoms.get_temperature()) if finite else float("nan"),
        "wall_s": time.perf_counter() - start,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("build/zbl_cascade"))
    parser.add_argument("--checkpoint", type=Path, help="a trained model with ZBL (default: train one here)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--cells", type=int, default=3, help="fcc Cu conventional cells per side (4 atoms each)")
    parser.add_argument("--energy", type=float, default=1000.0, help="PKA energy, eV")
    parser.add_argument("--duration", type=float, default=300.0, help="fs")
    parser.add_argument("--max-move", type=float, default=0.01, help="Å per step, the fastest atom")
    parser.add_argument("--max-dt", type=float, default=1.0, help="fs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ase.calculators.emt import EMT

    from nequip.ase import NequIPCalculator

    checkpoint = args.checkpoint or train_model(args.out_dir, args.epochs, args.frames)
    plain = without_zbl(checkpoint, args.out_dir / "without_zbl.ckpt")
    settings = dict(cells=args.cells, energy_eV=args.energy, duration_fs=args.duration, max_move_A=args.max_move,
                    max_dt_fs=args.max_dt)  # fmt: skip
    results = {}
    for name, calculator in (("emt", EMT()), ("with_zbl", NequIPCalculator(checkpoint)), ("without_zbl", NequIPCalculator(plain))):
        results[name] = run_cascade(calculator, **settings)
        r = results[name]
        print(
            f"{name:12s} finite {r['finite']!s:5s}  max |E - E0| {r['max_energy_deviation_eV']:9.4f} eV "
            f"({r['max_energy_deviation_meV_per_atom']:8.3f} meV/atom)  closest approach {r['closest_approach_A']:.3f} Å  "
            f"{r['steps']} steps, {r['wall_s']:.0f} s"
        )
    if args.json:
        from nequip.benchmark import machine_description

        record = {"command": "benchmarks/zbl_cascade.py", "settings": settings, "checkpoint": str(checkpoint),
                  "machine": machine_description(), "date": time.strftime("%Y-%m-%d"), "results": results}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
