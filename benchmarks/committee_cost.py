"""What a committee costs: one committee file of K models against the K models' own files,
each an MD step of the same system (issue 37), through ASE and LAMMPS.

    .venv/bin/python benchmarks/committee_cost.py --members 4 --sizes 512 4096 --json out.json

K benchmark models (DESIGN.md's architecture, seeds 0..K-1, random weights: speed does not
depend on them) are compiled once to ``--out-dir`` as ``.nequip.pth`` files (``--mode``; a
``.nequip.pt2`` of the committee takes K times a model's compile), each alone and the K
together in one committee file. Every case is ``python -m nequip.benchmark.md`` (an NVE run
in its own process, seconds per step after ``--warmup`` steps); rounds alternate the
committee and the members. The figure is the committee's median seconds per step over the sum
of the members' medians: below 1 is what sharing the neighbor list and the call saves.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nequip.benchmark import benchmark_model, machine_description
from nequip.compile import compile_model
from nequip.compile.compiler import EXTENSIONS
from nequip.model import Committee


def compiled_files(out_dir: Path, members: int, mode: str, target):
    """(the members' files, the committee's file), compiled where missing."""
    extension = EXTENSIONS[mode]
    models = [benchmark_model(seed=seed) for seed in range(members)]
    paths = [out_dir / f"member_{seed}{extension}" for seed in range(members)]
    committee_path = out_dir / f"committee_{members}{extension}"
    for model, path in zip(models, paths):
        if not path.exists():
            compile_model(model, path, mode=mode, device="cpu", target=target)
    if not committee_path.exists():
        committee = Committee(models, names=[path.name for path in paths])
        compile_model(committee, committee_path, mode=mode, device="cpu", target=target)
    return paths, committee_path


def seconds_per_step(engine: str, path: Path, atoms: int, steps: int, warmup: int, threads: int) -> float:
    command = [sys.executable, "-m", "nequip.benchmark.md", "--engine", engine, "--model", str(path),
               "--atoms", str(atoms), "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return 1.0 / json.loads(result.stdout.strip().splitlines()[-1])["timesteps_per_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--engines", nargs="+", default=["ase", "lammps"])
    parser.add_argument("--mode", default="torchscript", choices=["torchscript", "aotinductor"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("build/committee_cost"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = "pair_nequip" if args.mode == "aotinductor" else None
    members, committee = compiled_files(args.out_dir, args.members, args.mode, target)

    rows = []
    for engine in args.engines:
        for atoms in args.sizes:
            times = {"committee": [], **{path.name: [] for path in members}}
            for _ in range(args.rounds):
                for name, path in [("committee", committee)] + [(path.name, path) for path in members]:
                    times[name].append(seconds_per_step(engine, path, atoms, args.steps, args.warmup, args.threads))
            medians = {name: statistics.median(values) for name, values in times.items()}
            members_sum = sum(medians[path.name] for path in members)
            row = dict(engine=engine, atoms=atoms, committee_s=medians["committee"], members_sum_s=members_sum,
                       ratio=medians["committee"] / members_sum, runs=times)  # fmt: skip
            rows.append(row)
            print(f"{engine}, {atoms} atoms: committee of {args.members} {row['committee_s']:.3f} s/step, "
                  f"the {args.members} files {members_sum:.3f} s/step in all: {row['ratio']:.2f}", flush=True)  # fmt: skip
    if args.json:
        report = dict(command=" ".join(sys.argv), date=time.strftime("%Y-%m-%d"), machine=machine_description(),
                      mode=args.mode, members=args.members, threads=args.threads, rows=rows)  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
