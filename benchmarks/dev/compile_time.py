"""Cold compile time of the benchmark model to ``.pt2`` (target ``ase``): ours against the reference.

Each compile runs in its own process with an empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR``
a new temporary directory), so nothing is reused from an earlier compile; the sides alternate,
round after round, so that load on a shared machine hits them alike. Timed: the whole command.

* ours: ``compile_model(benchmark_model(), out, "aotinductor", "cpu", "ase")``, its check
  against the eager model included (what ``nequip-compile`` runs);
* ``--portable``: ours with ``portable=True`` (``nequip-compile --portable``: the message
  passing as torch operations that Inductor generates code for, instead of calls of the
  runtime's kernels);
* ``--without-speedups``: ours again with nequip.compile.inductor_speedups switched off, to
  measure what they save;
* ``--reference``: the reference release's ``nequip-compile <checkpoint> out.nequip.pt2 --mode
  aotinductor --device cpu --target ase`` on its checkpoint of the same architecture
  (benchmarks/dev/compare_reference.py builds it on first use);
* ``--target pair_nequip_domain``: ours to the file of LAMMPS on several ranks (the whole model
  and its layer parts, each part its own AOTInductor compile; the reference has no such file);
* ``--processes 1 2``: ours with each number of compile processes (``NEQUIP_COMPILE_WORKERS``,
  nequip.compile.compile_workers: the models of a package of several compiled side by side).

    .venv/bin/python benchmarks/dev/compile_time.py --reference --portable --without-speedups --rounds 2 \
        --json build/compile_time.json
    .venv/bin/python benchmarks/dev/compile_time.py --target pair_nequip_domain --processes 1 2 --rounds 1 \
        --json build/compile_time_domain.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

sys.path.insert(0, str(HERE))
from compare_reference import COMPILE_OURS  # noqa: E402  (the compile that compare_reference.py times)

_WITHOUT_SPEEDUPS = """
import contextlib
import nequip.compile.aotinductor as aotinductor
import nequip.compile.compile_workers as compile_workers
aotinductor.faster_compile = compile_workers.faster_compile = contextlib.nullcontext
"""


def timed(command, scratch: Path, variables) -> float:
    cache = scratch / "inductor-cache"
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), **variables)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="also time the reference release's nequip-compile")
    parser.add_argument("--portable", action="store_true", help="also time ours with portable=True")
    parser.add_argument("--without-speedups", action="store_true", help="also time ours without inductor_speedups")
    parser.add_argument("--target", default="ase", choices=["ase", "pair_nequip", "pair_nequip_domain"],
                        help="ours' target (the reference's is ase)")
    parser.add_argument("--processes", type=int, nargs="+",
                        help="time ours with each of these numbers of compile processes (default: the CPUs)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    ours = COMPILE_OURS.replace('"ase")', f'"{args.target}")')
    sides, variables = {}, {}
    for count in args.processes or [None]:
        name = "ours" if count is None else f"ours, {count} compile process{'es' if count > 1 else ''}"
        sides[name] = lambda out: [sys.executable, "-c", ours, str(out)]
        variables[name] = {} if count is None else {"NEQUIP_COMPILE_WORKERS": str(count)}
    if args.portable:
        portable = ours.replace(f'"{args.target}")', f'"{args.target}", portable=True)')
        sides["ours, portable"] = lambda out: [sys.executable, "-c", portable, str(out)]
    if args.without_speedups:
        sides["ours without speedups"] = lambda out: [sys.executable, "-c", _WITHOUT_SPEEDUPS + ours, str(out)]
        variables["ours without speedups"] = {"NEQUIP_COMPILE_WORKERS": "1"}  # the switch is in this process
    reference = None
    if args.reference:
        from compare_reference import build_reference, reference_python

        reference = build_reference(rebuild=False)
        nequip_compile = reference_python().parent / "nequip-compile"
        sides["reference"] = lambda out: [
            str(nequip_compile), reference["checkpoint"], str(out),
            "--mode", "aotinductor", "--device", "cpu", "--target", "ase",
        ]

    seconds = {name: [] for name in sides}
    for round_index in range(args.rounds):
        for name, command in sides.items():
            with tempfile.TemporaryDirectory() as scratch:
                scratch = Path(scratch)
                seconds[name].append(timed(command(scratch / "model.nequip.pt2"), scratch, variables.get(name, {})))
            print(f"round {round_index + 1}: {name} {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)

    from nequip.benchmark import machine_description

    report = {
        "benchmark": f"cold compile time, benchmark model, .pt2 target {args.target}",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "seconds": seconds,
        "median_s": {name: statistics.median(values) for name, values in seconds.items()},
        "machine": machine_description(),
    }
    if reference is not None:
        report["reference_command"] = " ".join(sides["reference"](Path("out.nequip.pt2")))
        report["ours_over_reference"] = report["median_s"][next(iter(sides))] / report["median_s"]["reference"]
    for name, value in report["median_s"].items():
        print(f"{name}: median {value:.1f} s over {len(seconds[name])} compiles")
    if reference is not None:
        print(f"ours / reference: {report['ours_over_reference']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
