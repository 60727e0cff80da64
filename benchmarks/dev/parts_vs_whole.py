"""The whole compiled model against its layer-by-layer parts, on one process (issue 22): a
`.pt2` of target pair_nequip_domain holds both, so one file gives both sides on the same atoms
and edges. The whole model is what one rank and ASE run (``Model.compute``); the parts are what
each of several LAMMPS ranks runs (``Model.compute_exchanging``), here with every atom owned
and the periodic images reached by the edges' cell shifts, so nothing is exchanged.

    .venv/bin/python benchmarks/dev/parts_vs_whole.py MODEL_domain.nequip.pt2 --sizes 512 4096 --rounds 3 --json out.json

Rattled 3C-SiC (the model must know Si and C); rounds alternate the two sides, each timed call
after an untimed one of the same side (as in a run, where the previous step's call was of the
same kind and its memory is reused: call_memory.cpp); medians of seconds per call, of the
kernel's CPU seconds and of the page faults per call, the time ratio, and the largest
differences of energy and forces between the sides. Torch threads = --threads.
"""

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096], help="atoms: 8 n^3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np
    from ase.build import bulk

    from nequip import _runtime
    from nequip.benchmark import machine_description
    from nequip.data import TypeMapper, from_ase

    _runtime.set_num_threads(args.threads)
    model = _runtime.Model(str(args.model))
    if not model.exchanges_features:
        parser.error(f"{args.model} has no layer-by-layer parts: compile it with --target pair_nequip_domain")
    report = dict(machine=machine_description(), model=str(args.model), threads=args.threads, sizes=[])
    for size in args.sizes:
        cells = round((size / 8) ** (1 / 3))
        atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(cells)
        atoms.rattle(0.05, seed=0)
        frame = {k: v.numpy() for k, v in from_ase(atoms, TypeMapper(["Si", "C"]), model.r_max).items()}
        cell = frame["cell"].reshape(3, 3)
        whole_args = (frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], cell)
        owner = np.arange(len(atoms))
        sides = {
            "whole": lambda: model.compute(*whole_args),
            "parts": lambda: model.compute_exchanging(frame["pos"], frame["atom_types"], frame["edge_index"], owner,
                                                      cell=cell, edge_cell_shift=frame["edge_cell_shift"]),  # fmt: skip
        }
        outputs = {name: call() for name, call in sides.items()}  # warm-up
        times = {name: [] for name in sides}
        kernel_seconds = {name: [] for name in sides}
        page_faults = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, call in sides.items():
                call()
                before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_SELF)
                kernel_seconds[name].append(after.ru_stime - before.ru_stime)
                page_faults[name].append(after.ru_minflt - before.ru_minflt)
        whole, parts = (statistics.median(times[name]) for name in sides)
        energy = outputs["whole"]["total_energy"]
        row = dict(
            atoms=len(atoms),
            edges=int(frame["edge_index"].shape[1]),
            whole_seconds=whole,
            parts_seconds=parts,
            whole_over_parts=whole / parts,
            runs=times,
            kernel_seconds={name: statistics.median(values) for name, values in kernel_seconds.items()},
            page_faults={name: statistics.median(values) for name, values in page_faults.items()},
            relative_energy_difference=abs(outputs["parts"]["total_energy"] - energy) / abs(energy),
            max_force_difference=float(np.abs(outputs["parts"]["forces"] - outputs["whole"]["forces"]).max()),
        )
        report["sizes"].append(row)
        print(f"{row['atoms']} atoms, {row['edges']} edges: whole {whole:.3f} s, parts {parts:.3f} s, "
              f"whole / parts {whole / parts:.2f}; kernel CPU s {row['kernel_seconds']}, "
              f"page faults {row['page_faults']}; energy rel. diff. {row['relative_energy_difference']:.1e}, "
              f"max force diff. {row['max_force_difference']:.1e} eV/Å", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
