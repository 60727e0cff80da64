"""What the C++ runtime's own checks cost: the pass over the edges every call makes (the
closest pair, for the close-pair warning and the non-finite-output error) on the benchmark
systems, and, given a compiled file, the verification of its records (zip CRC-32s and content
hash) against its whole load.

    .venv/bin/python benchmarks/dev/runtime_checks.py [--model FILE.nequip.pt2] [--json out.json]

Medians of --repeats timings; the edge pass goes through ``_runtime.close_pair_warning``, which
also converts the arrays, so it is an upper bound of what a call spends on it.
"""

import argparse
import json
import platform
import statistics
import time

from ase.build import bulk

from nequip import _runtime
from nequip.data import compute_neighbor_list

R_MAX = 5.0  # the benchmark model's


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a compiled file whose verification and load to time")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    figures = {"machine": platform.processor() or platform.machine(), "edge_pass": []}
    for repeat in (2, 4, 8):  # 64, 512, 4096 atoms
        atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=0)
        edge_index, shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, R_MAX)
        frame = (atoms.positions, edge_index, shift, atoms.cell.array)
        seconds = median_seconds(lambda: _runtime.close_pair_warning("m", {"r_max": str(R_MAX)}, *frame), args.repeats)
        figures["edge_pass"].append({"atoms": len(atoms), "edges": int(edge_index.shape[1]), "seconds": seconds})
        print(f"edge pass: {len(atoms)} atoms, {edge_index.shape[1]} edges: {seconds * 1e3:.3f} ms")
    if args.model:
        repeats = max(3, args.repeats // 4)
        verify = median_seconds(lambda: _runtime.content_hash(args.model), repeats)
        load = median_seconds(lambda: _runtime.Model(args.model), repeats)
        figures["file"] = {"path": args.model, "verify_seconds": verify, "load_seconds": load}
        print(f"{args.model}: records verified in {verify:.3f} s, loaded (verification included) in {load:.3f} s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
