"""Compile the benchmark model (DESIGN.md) to both formats and time one energy + forces + stress
call of the eager model, the ``.nequip.pth`` and the ``.nequip.pt2`` (ase target), the compiled
files through ``nequip.inference.open_model`` (the C++ runtime), on the benchmark systems.

    .venv/bin/python benchmarks/dev/compile_and_call.py --sizes 64 512 4096 --repeats 5 \\
        --out-dir outputs/compile_bench --json outputs/compile_bench/compile_and_call.json

Compile times include each file's check against the eager model. The machine's load average
is recorded before and after: on a shared machine, figures are only comparable at equal load.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from nequip.benchmark import BENCHMARK_MODEL_CONFIG, benchmark_model, machine_description, sic_supercell
from nequip.inference import open_model
from nequip.compile import compile_model
from nequip.data import TypeMapper, from_ase, keys

FORMATS = {
    "pth": dict(mode="torchscript", target=None, name="benchmark.nequip.pth"),
    "pt2": dict(mode="aotinductor", target="ase", name="benchmark_ase.nequip.pt2"),
}


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
    parser.add_argument("--warmup", type=int, default=2, help="calls before timing (TorchScript profiles its first calls)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/compile_bench"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    model = benchmark_model()
    mapper = TypeMapper(model.type_names)
    frames = {n: from_ase(sic_supercell(n), mapper, model.r_max) for n in args.sizes}

    compile_seconds = {}
    callers = {"eager": model}
    for fmt, spec in FORMATS.items():
        start = time.perf_counter()
        path = compile_model(
            model, args.out_dir / spec["name"], mode=spec["mode"], device="cpu", target=spec["target"]
        )
        compile_seconds[fmt] = time.perf_counter() - start
        callers[fmt] = open_model(path)
        print(f"compiled {fmt} in {compile_seconds[fmt]:.1f} s -> {path}", flush=True)

    results = []
    print(f"{'atoms':>6} {'edges':>8} " + " ".join(f"{name + ' (ms)':>11}" for name in callers) + " " + " ".join(f"{name + ' speed-up':>13}" for name in FORMATS))
    for num_atoms, frame in frames.items():
        row = dict(atoms=num_atoms, edges=int(frame[keys.EDGE_INDEX].shape[1]))
        for name, call in callers.items():
            for _ in range(args.warmup):
                call(frame)
            row[f"{name}_ms"] = 1e3 * median_seconds(lambda: call(frame), args.repeats)
        for fmt in FORMATS:
            row[f"{fmt}_speedup"] = row["eager_ms"] / row[f"{fmt}_ms"]
        results.append(row)
        print(
            f"{num_atoms:>6} {row['edges']:>8} "
            + " ".join(f"{row[name + '_ms']:>11.1f}" for name in callers)
            + " "
            + " ".join(f"{row[fmt + '_speedup']:>13.2f}" for fmt in FORMATS),
            flush=True,
        )
    report = dict(
        benchmark="compile time; energy+forces+stress per call: eager vs .nequip.pth vs .nequip.pt2 (ase target)",
        model=BENCHMARK_MODEL_CONFIG,
        repeats=args.repeats,
        warmup=args.warmup,
        machine=machine_description(),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        compile_seconds=compile_seconds,
        results=results,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
