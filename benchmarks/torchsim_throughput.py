"""Structures per second: many cells batched through TorchSim against one at a time through ASE.

    .venv/bin/python benchmarks/torchsim_throughput.py --threads 2 --repeats 3 \
        --json docs/torchsim_throughput.json

The benchmark model of DESIGN.md is compiled once (``--out-dir``, reused) to a ``.nequip.pt2``
of target ``batch``; both sides run that same file on the C++ runtime, in this process, with
``--threads`` torch threads: single points (energy, forces, stress) of ``--cells`` rattled 3C-SiC
cells of each size (default 256 cells of 64 atoms and 32 of 512), each cell rattled with its
own seed.

- one at a time: ``NequIPCalculator`` on each ``Atoms`` in turn (one runtime call per cell);
- batched: ``torch_sim.static`` with ``nequip.integrations.torchsim.NequIPModel`` and a
  ``BinningAutoBatcher`` whose memory limit holds ``--batch-atoms`` atoms of these cells; the
  model evaluates each bin as it does by default (on a CPU in calls of at most
  ``CPU_ATOMS_PER_CALL`` atoms) and, as a second side, in one runtime call per bin.

On a machine whose cores are busy with other work, use ``--threads 1`` (and
``OMP_NUM_THREADS=1``): OpenMP threads that wait for each other on oversubscribed cores made
single 64-atom calls 8x slower (1.2-1.6 s against 0.16 s on one thread, load average 8).

The sides alternate ``--repeats`` times; the figures are medians, the ratios are of the
medians of the same run. Both include building the neighbor lists (vesin, per cell, on both sides). The
largest difference between the two sides' energies and forces is printed as a check.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nequip.ase import NequIPCalculator
from nequip.benchmark import benchmark_model, machine_description, sic_supercell
from nequip.compile import compile_model
from nequip.utils.atomic_io import atomic_open

try:
    import torch_sim as ts

    from nequip.integrations.torchsim import CPU_ATOMS_PER_CALL, NequIPModel
except ImportError as error:
    sys.exit(f"{error}: this benchmark needs TorchSim (pip install 'nequip[torchsim]')")

DEFAULT_CELLS = {64: 256, 512: 32}


def one_at_a_time(path: Path, systems):
    """Energies (F,) and forces of each cell by NequIPCalculator, one call per cell."""
    calculator = NequIPCalculator(str(path))
    energies, forces = [], []
    for atoms in systems:
        atoms = atoms.copy()
        atoms.calc = calculator
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        atoms.get_stress()
    return np.array(energies), forces


def batched(model, systems, batch_atoms: int):
    """Energies (F,) and forces of each cell by TorchSim, the autobatcher's bins per call."""
    one_cell = ts.io.atoms_to_state(systems[:1], model.device, model.dtype)
    per_cell = ts.autobatching.calculate_memory_scaler(one_cell, model.memory_scales_with)
    cells_per_call = max(1, batch_atoms // len(systems[0]))
    autobatcher = ts.BinningAutoBatcher(
        model, memory_scales_with=model.memory_scales_with, max_memory_scaler=(cells_per_call + 0.5) * per_cell
    )
    results = ts.static(systems, model, autobatcher=autobatcher)
    return np.array([float(r["potential_energy"]) for r in results]), [r["forces"].numpy() for r in results]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(DEFAULT_CELLS), help="atoms per cell")
    parser.add_argument("--cells", type=int, nargs="+", help="cells of each size (default: 256 of 64 atoms, 32 of 512)")
    parser.add_argument("--batch-atoms", type=int, nargs="+", default=[512, 2048],
                        help="atoms per batched call (the autobatcher's limit); each value is a side of its own")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=Path("build/torchsim_throughput"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    cells = args.cells or [DEFAULT_CELLS.get(size, 16) for size in args.sizes]
    if len(cells) != len(args.sizes):
        parser.error(f"--cells: {len(cells)} counts for {len(args.sizes)} sizes")
    torch.set_num_threads(args.threads)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "benchmark_model_batch.nequip.pt2"
    if not path.exists():
        print(f"compiling the benchmark model to {path} (target batch; minutes on 2 cores)", flush=True)
        compile_model(benchmark_model(), path, mode="aotinductor", device="cpu", target="batch")
    # the model's own policy (on a CPU, calls of at most CPU_ATOMS_PER_CALL atoms), and every
    # bin of the autobatcher in one call
    models = {"default": NequIPModel(path), "whole_bin": NequIPModel(path, max_atoms_per_call=10**9)}
    variants = [(batch_atoms, policy) for batch_atoms in args.batch_atoms for policy in models]

    def side_name(batch_atoms, policy):
        return f"torchsim_{batch_atoms}" + ("" if policy == "default" else "_whole_bin")

    rows = []
    for size, count in zip(args.sizes, cells):
        systems = [sic_supercell(size, seed=seed) for seed in range(count)]
        # warm-up of every side (the runtime's first calls of a size allocate its buffers)
        one_at_a_time(path, systems[:2])
        for batch_atoms, policy in variants:
            batched(models[policy], systems[: max(1, batch_atoms // size)], batch_atoms)
        sides = ["ase"] + [side_name(*variant) for variant in variants]
        times = {side: [] for side in sides}
        for repeat in range(args.repeats):
            start = time.perf_counter()
            ase_energy, ase_forces = one_at_a_time(path, systems)
            times["ase"].append(time.perf_counter() - start)
            differences = []
            for batch_atoms, policy in variants:
                start = time.perf_counter()
                ts_energy, ts_forces = batched(models[policy], systems, batch_atoms)
                times[side_name(batch_atoms, policy)].append(time.perf_counter() - start)
                differences.append((
                    float(np.abs(ts_energy - ase_energy).max()),
                    max(float(np.abs(a - b).max()) for a, b in zip(ts_forces, ase_forces)),
                ))  # fmt: skip
            print(f"{size} atoms x {count} cells, repeat {repeat}: "
                  + ", ".join(f"{side} {times[side][-1]:.2f} s" for side in sides), flush=True)  # fmt: skip
        medians = {side: statistics.median(values) for side, values in times.items()}
        ase_s = medians["ase"]
        print(f"{size} atoms x {count} cells: ASE one at a time {count / ase_s:.2f} structures/s "
              f"({1e6 * ase_s / (count * size):.0f} µs/atom)", flush=True)  # fmt: skip
        for (batch_atoms, policy), (energy_difference, force_difference) in zip(variants, differences):
            torchsim_s = medians[side_name(batch_atoms, policy)]
            cells_per_bin = max(1, batch_atoms // size)
            cells_per_call = cells_per_bin if policy == "whole_bin" else max(1, min(cells_per_bin, CPU_ATOMS_PER_CALL // size))
            row = {
                "atoms_per_cell": size,
                "cells": count,
                "batch_atoms": batch_atoms,
                "calls": policy,
                "cells_per_bin": cells_per_bin,
                "cells_per_call": cells_per_call,
                "ase_s": ase_s,
                "torchsim_s": torchsim_s,
                "ase_structures_per_s": count / ase_s,
                "torchsim_structures_per_s": count / torchsim_s,
                "ase_us_per_atom": 1e6 * ase_s / (count * size),
                "torchsim_us_per_atom": 1e6 * torchsim_s / (count * size),
                "speedup": ase_s / torchsim_s,
                "ase_runs_s": times["ase"],
                "torchsim_runs_s": times[side_name(batch_atoms, policy)],
                "max_energy_difference_eV": energy_difference,
                "max_force_difference_eV_per_A": force_difference,
            }
            rows.append(row)
            print(f"  TorchSim, bins of {cells_per_bin} cells, {cells_per_call} per call: {row['torchsim_structures_per_s']:.2f} "
                  f"structures/s ({row['torchsim_us_per_atom']:.0f} µs/atom): {row['speedup']:.2f}x; energies "
                  f"agree to {energy_difference:.2g} eV, forces to {force_difference:.2g} eV/Å", flush=True)  # fmt: skip

    report = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(),
        "model": str(path),
        "threads": args.threads,
        "repeats": args.repeats,
        "results": rows,
    }
    if args.json:
        with atomic_open(args.json) as f:
            f.write(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
