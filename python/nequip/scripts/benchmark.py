"""nequip-benchmark: how fast MD runs on this machine, in ASE and LAMMPS, for .pt2 and .pth models.

Without --models, the benchmark model of DESIGN.md (random weights: speed does not depend on
them) is compiled to both formats in the output folder first (reused when already there).
Every case runs in its own process, --repeats times; the table gives medians, and the
largest peak resident memory.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..benchmark import SIZES, machine_description
from ..utils.atomic_io import atomic_open

FORMAT_OF_MODE = {"aotinductor": "pt2", "torchscript": "pth"}


def compile_benchmark_models(output: Path, device: str, log) -> list:
    """The benchmark model compiled to .nequip.pt2 and .nequip.pth (kept in ``output`` for reuse)."""
    from ..benchmark import benchmark_model, sic_supercell
    from ..compile import compile_model
    from ..data import TypeMapper, from_ase

    model = None
    paths = []
    for mode, extension in FORMAT_OF_MODE.items():
        path = output / f"benchmark_model.nequip.{extension}"
        if not path.exists():
            if model is None:
                model = benchmark_model()
                example = from_ase(sic_supercell(64), TypeMapper(model.type_names), model.r_max)
            log(f"compiling the benchmark model to {path} ({mode}; AOTInductor takes minutes on 2 cores)")
            compile_model(model, path, mode=mode, device=device, target="ase", example_data=example)
        paths.append(str(path))
    return paths


def run_case(engine: str, model: str, atoms: int, args) -> dict:
    command = [
        sys.executable, "-m", "nequip.benchmark.md", "--engine", engine, "--model", model,
        "--atoms", str(atoms), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--device", args.device,
    ]  # fmt: skip
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"benchmark case {engine} {model} {atoms} atoms failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def summarise(runs: list) -> dict:
    """Median speed over repeats, largest peak memory."""
    first = runs[0]
    speed = statistics.median(run["timesteps_per_s"] for run in runs)
    return dict(
        engine=first["engine"],
        format=first["format"],
        atoms=first["atoms"],
        threads=first["threads"],
        device=first["device"],
        repeats=len(runs),
        timesteps_per_s=speed,
        ns_per_day=86400.0 * speed * 1e-6,
        us_per_atom_step=1e6 / speed / first["atoms"],
        peak_memory_mib=max(run["peak_memory_mib"] for run in runs),
    )


def format_table(rows: list) -> str:
    header = f"{'atoms':>6}  {'engine':<7} {'format':<6} {'steps/s':>9} {'ns/day':>8} {'µs/atom-step':>13} {'peak MiB':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['atoms']:>6}  {row['engine']:<7} {row['format']:<6} {row['timesteps_per_s']:>9.3f} "
            f"{row['ns_per_day']:>8.4f} {row['us_per_atom_step']:>13.1f} {row['peak_memory_mib']:>9.0f}"
        )
    return "\n".join(lines)


ENGINE_LABEL = {"ase": "ASE", "lammps": "LAMMPS"}
FORMAT_LABEL = {"pt2": ".pt2 (AOTInductor)", "pth": ".pth (TorchScript)"}


def plot(rows: list, path: Path, models: list) -> None:
    """µs per atom-step against the number of atoms, one line per engine and file format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for engine, fmt in sorted({(row["engine"], row["format"]) for row in rows}):
        series = sorted((row["atoms"], row["us_per_atom_step"]) for row in rows if (row["engine"], row["format"]) == (engine, fmt))
        axes.plot(*zip(*series), marker="o", label=f"{ENGINE_LABEL[engine]}, {FORMAT_LABEL[fmt]}")
    # the measured sizes are the ticks: a log axis with plain numbers, no minor ticks
    sizes = sorted({row["atoms"] for row in rows})
    axes.set_xscale("log")
    axes.set_xticks(sizes, [str(size) for size in sizes])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_minor_formatter(NullFormatter())
    # engines and sizes differ by orders of magnitude: log time, labelled in plain µs
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    # within one decade matplotlib labels minor ticks too, by default as 6x10^1
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.grid(True, alpha=0.3)
    axes.set_xlabel("atoms in the periodic box")
    axes.set_ylabel("time per atom per MD step (µs)")
    threads = sorted({row["threads"] for row in rows})
    devices = sorted({row["device"] for row in rows})
    axes.set_title(
        f"MD speed (lower is better); torch threads: {', '.join(map(str, threads))}; device: {', '.join(devices)}\n"
        f"model: {', '.join(Path(model).name for model in models)}",
        fontsize=10,
    )
    axes.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nequip-benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--models", nargs="+", help="compiled models (.nequip.pt2 / .nequip.pth) for Si and C")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], choices=sorted(SIZES))
    parser.add_argument("--engines", nargs="+", default=["ase", "lammps"], choices=["ase", "lammps"])
    parser.add_argument("--steps", type=int, default=5, help="timed MD steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed MD steps before timing")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case (the median is reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmark_output"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    for model in args.models or ():
        if not _is_compiled_file(model):
            parser.error(f"{model} is not a compiled model file (.nequip.pt2 or .nequip.pth)")
    args.output.mkdir(parents=True, exist_ok=True)
    models = args.models or compile_benchmark_models(args.output, args.device, log=print)

    cases = [(engine, model, atoms) for atoms in args.sizes for engine in args.engines for model in models]
    rows = []
    with tqdm(total=len(cases) * args.repeats, desc="MD benchmark", unit="run") as progress:
        for engine, model, atoms in cases:
            runs = []
            for _ in range(args.repeats):
                progress.set_postfix_str(f"{engine} {Path(model).name} {atoms} atoms")
                runs.append(run_case(engine, model, atoms, args))
                progress.update()
            rows.append(summarise(runs))

    print(format_table(rows))
    report = dict(
        command=" ".join(["nequip-benchmark"] + (argv if argv is not None else sys.argv[1:])),
        date=time.strftime("%Y-%m-%d"),
        machine=machine_description(),
        models=models,
        steps=args.steps,
        warmup=args.warmup,
        results=rows,
    )
    with atomic_open(args.output / "benchmark.json") as f:
        json.dump(report, f, indent=2)
    plot(rows, args.output / "benchmark.png", models)
    print(f"wrote {args.output / 'benchmark.json'} and {args.output / 'benchmark.png'} "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip



def _is_compiled_file(path: str) -> bool:
    from nequip.load import COMPILED_KINDS, ModelFileError, model_file_kind

    try:
        return model_file_kind(path) in COMPILED_KINDS and Path(path).is_file()
    except ModelFileError:
        return False


if __name__ == "__main__":
    main()
