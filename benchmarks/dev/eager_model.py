"""Eager model speed on the benchmark model and systems (DESIGN.md): energy + forces + stress per
call, and the share of a step spent building the neighbor list.

    .venv/bin/python benchmarks/dev/eager_model.py --sizes 64 512 4096 --repeats 5 --json eager.json
"""

import argparse
import json
import statistics
import time

import torch

from nequip.benchmark import BENCHMARK_MODEL_CONFIG, benchmark_model, machine_description, sic_supercell
from nequip.data import TypeMapper, from_ase, keys


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = benchmark_model()
    mapper = TypeMapper(model.type_names)
    results = []
    print(f"{'atoms':>6} {'edges':>8} {'neighbor list (ms)':>20} {'model (ms)':>11} {'µs/atom':>8} {'NL share':>9}")
    for num_atoms in args.sizes:
        atoms = sic_supercell(num_atoms)
        frame = from_ase(atoms, mapper, model.r_max)
        model(frame)  # warm-up
        neighbor_list_s = median_seconds(lambda: from_ase(atoms, mapper, model.r_max), args.repeats)
        model_s = median_seconds(lambda: model(frame), args.repeats)
        row = dict(
            atoms=num_atoms,
            edges=int(frame[keys.EDGE_INDEX].shape[1]),
            neighbor_list_ms=1e3 * neighbor_list_s,
            model_ms=1e3 * model_s,
            us_per_atom=1e6 * model_s / num_atoms,
            neighbor_list_share=neighbor_list_s / (neighbor_list_s + model_s),
        )
        results.append(row)
        print(
            f"{num_atoms:>6} {row['edges']:>8} {row['neighbor_list_ms']:>20.2f} {row['model_ms']:>11.1f} "
            f"{row['us_per_atom']:>8.1f} {100 * row['neighbor_list_share']:>8.2f}%"
        )
    report = dict(
        benchmark="eager energy+forces+stress",
        model=BENCHMARK_MODEL_CONFIG,
        repeats=args.repeats,
        machine=machine_description(),
        results=results,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
