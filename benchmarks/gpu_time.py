"""The benchmark model's energy + forces + stress call on a GPU against the same call on the
CPU (issue 20): the benchmark model (DESIGN.md, random weights) compiled to ``.nequip.pt2``
(target ase) once per device, each file timed through the C++ runtime (as ASE and LAMMPS run
it) on rattled 3C-SiC, and the two results compared.

    python benchmarks/gpu_time.py --sizes 4096 32768 --json build/gpu_time.json

Prints one table: per device and size, the median time per call, µs per atom, the GPU's
speed-up over the CPU, and the largest force difference between the two. The CPU uses every
core (torch threads = cores). Run by benchmarks/gpu_check.sh.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nequip import _runtime
from nequip.benchmark import benchmark_model, machine_description, sic_supercell
from nequip.compile import compile_model
from nequip.data import TypeMapper, compute_neighbor_list


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("build/gpu_time"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--compile-only", action="store_true", help="compile the files and stop")
    parser.add_argument("--reuse", action="store_true", help="time the files of an earlier --compile-only run")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    model = benchmark_model()
    files, compile_seconds = {}, {}
    for device in args.devices:
        files[device] = args.out_dir / f"benchmark_{device}.nequip.pt2"
        if args.reuse and files[device].exists():
            continue
        start = time.perf_counter()
        compile_model(model, files[device], mode="aotinductor", device=device, target="ase")
        compile_seconds[device] = time.perf_counter() - start
        print(f"compiled for {device} in {compile_seconds[device]:.0f} s", flush=True)
    if args.compile_only:
        return 0

    rows = []
    for num_atoms in args.sizes:
        atoms = sic_supercell(num_atoms)
        atom_types = TypeMapper(model.type_names)(atoms.get_chemical_symbols())
        edge_index, edge_cell_shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.r_max)
        inputs = (atoms.positions, atom_types, edge_index, edge_cell_shift, atoms.cell.array)
        forces = {}
        for device in args.devices:
            runtime = _runtime.Model(str(files[device]))  # the file's own device
            for _ in range(args.warmup):
                runtime.compute(*inputs)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = runtime.compute(*inputs)  # results are on the host when it returns
                times.append(time.perf_counter() - start)
            forces[device] = out["forces"]
            seconds = statistics.median(times)
            rows.append(
                dict(device=runtime.device, atoms=num_atoms, edges=int(edge_index.shape[1]), seconds=seconds,
                     us_per_atom=seconds / num_atoms * 1e6, energy=float(out["total_energy"]))
            )
            del runtime
        if len(args.devices) > 1:
            first, *others = args.devices
            scale = max(1.0, float(np.abs(forces[first]).max()))
            for row in rows[-len(args.devices):]:
                if row["device"].startswith(first):
                    continue
                row["max_force_difference_relative"] = float(
                    np.abs(forces[first] - forces[row["device"].split(":")[0]]).max() / scale
                )

    print()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"benchmark model (.pt2, target ase): energy + forces + stress per call; GPU: {gpu}; "
          f"CPU: {machine_description()['cpu']}, {os.cpu_count()} threads; torch {torch.__version__}")
    print(f"| atoms | edges | device | per call | µs/atom | speed-up vs cpu | max |ΔF| / max |F| |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        cpu = next((r["seconds"] for r in rows if r["atoms"] == row["atoms"] and r["device"] == "cpu"), None)
        speedup = f"{cpu / row['seconds']:.1f}×" if cpu else ""
        difference = f"{row['max_force_difference_relative']:.1e}" if "max_force_difference_relative" in row else ""
        print(f"| {row['atoms']} | {row['edges']} | {row['device']} | {row['seconds'] * 1e3:.1f} ms | "
              f"{row['us_per_atom']:.2f} | {speedup} | {difference} |")
    if args.json:
        record = dict(date=time.strftime("%Y-%m-%d"), machine=machine_description(), gpu=gpu,
                      compile_seconds=compile_seconds, rows=rows)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
