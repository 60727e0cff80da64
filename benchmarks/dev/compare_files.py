"""Two or more of our `.pt2` files on the same frames: time per call and peak memory, each in its
own process (compare_reference.py's workers), alternating; for a change to the compiler, the
file compiled before it against the file compiled after it.

    .venv/bin/python benchmarks/dev/compare_files.py before=old.nequip.pt2 after=new.nequip.pt2 \\
        --sizes 512 4096 --rounds 3 --json compare_files.json

Frames: the benchmark systems (rattled 3C-SiC, benchmark/systems.py); from --one-at-a-time
atoms on, a fresh process per side and round. Ratios are of each file to the first.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_reference import BUILD, measure, measure_one_at_a_time  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="NAME=PATH", help="at least two, the first the baseline")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--one-at-a-time", type=int, default=4096, metavar="ATOMS")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sides = {}
    for item in args.files:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            parser.error(f"{item!r} is not NAME=PATH of an existing file")
        sides[name] = path
    if len(sides) < 2:
        parser.error("give at least two files, with distinct names")
    (BUILD / "perf").mkdir(parents=True, exist_ok=True)

    from nequip.benchmark import machine_description

    rows = []
    first = next(iter(sides))
    for num_atoms in args.sizes:
        run = measure_one_at_a_time if num_atoms >= args.one_at_a_time else measure
        row = run(num_atoms, sides, args.threads, args.rounds, args.warmup)
        base = row["sides"][first]
        print(f"\n{row['atoms']} atoms, {row['edges']} edges, median of {row['rounds']} alternating calls")
        for name, side in row["sides"].items():
            times = " ".join(f"{t:.3f}" for t in side["times"])
            print(
                f"  {name:<12} {side['seconds_per_call']:>8.4f} s ({times})  peak RSS {side['peak_rss_mib']:>7.0f} MiB"
                f"  / {first}: time {side['seconds_per_call'] / base['seconds_per_call']:.3f},"
                f" memory {side['peak_rss_mib'] / base['peak_rss_mib']:.3f};  E {side['check']['total_energy']:.6f}"
            )
        rows.append(row)
    if args.json:
        report = dict(machine=machine_description(), threads=args.threads, files=sides, results=rows)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
