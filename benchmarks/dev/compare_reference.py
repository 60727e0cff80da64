"""Our compiled model against the established reference release (nequip 0.19.1), same work.

Both sides are the benchmark model of DESIGN.md (num_layers 4, l_max 2, parity, 32 features,
r_max 5, 8 Bessels, p = 6, radial MLP 2 x 64, float32, types Si C, random weights), compiled to
AOTInductor (``*.nequip.pt2``, target ``ase``: energy, forces and stress per call), and called on
the same 3C-SiC structures with the same neighbor lists.

* The reference lives in its own venv, build/reference-venv (created on first use: torch 2.13.0
  first, then nequip==0.19.1 and what it needs); none of its code enters ours. It is built with
  its own workflow (``nequip-train`` for one epoch at learning rate 0, then ``nequip-compile``),
  see benchmarks/dev/reference/build_reference.py; the exact config and commands are printed.
* Ours is compiled with ``nequip.compile.compile_model(..., "aotinductor", "cpu", "ase")``.
* Each side runs in its own process (benchmarks/dev/pt2_worker.py, torch only) so that its peak
  resident memory (VmHWM) is its own; calls alternate ours / reference, one at a time, so
  that load on a shared machine hits both alike. Quote the ratios.

    .venv/bin/python benchmarks/dev/compare_reference.py --sizes 64 512 4096 --json build/compare.json
    .venv/bin/python benchmarks/dev/compare_reference.py --check          # against docs/benchmark_baseline.json

``--check`` fails (exit 1) when our time per call or peak memory, relative to the reference
measured in the same run, is more than 20% above the baseline's ratio (the ratio cancels the
machine's speed).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = ROOT / "build"
REFERENCE_VENV = BUILD / "reference-venv"
REFERENCE_VERSION = "0.19.1"
TORCH_VERSION = "2.13.0"
BASELINE = ROOT / "docs" / "benchmark_baseline.json"
SLOWDOWN_TOLERANCE = 0.20


def log(message: str) -> None:
    print(f"[compare_reference] {message}", file=sys.stderr, flush=True)


def reference_python() -> Path:
    return REFERENCE_VENV / "bin" / "python"


def ensure_reference_venv() -> None:
    """build/reference-venv with torch 2.13.0 (installed first, so nothing pulls another) and the reference."""
    python = reference_python()
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import torch, nequip; print(torch.__version__, nequip.__version__)"],
            capture_output=True, text=True,
        )
        if check.returncode == 0 and check.stdout.split()[1:] == [REFERENCE_VERSION]:
            if not check.stdout.startswith(TORCH_VERSION):
                raise RuntimeError(f"{REFERENCE_VENV} has torch {check.stdout.split()[0]}, expected {TORCH_VERSION}")
            return
    log(f"creating {REFERENCE_VENV} (torch {TORCH_VERSION}, nequip {REFERENCE_VERSION})")
    subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True)
    # naming torch again pins it: the reference's own requirement (torch>=2.2) cannot move it
    subprocess.run(pip + [f"nequip=={REFERENCE_VERSION}", f"torch=={TORCH_VERSION}"], check=True)


def build_reference(rebuild: bool) -> dict:
    workdir = BUILD / "reference"
    record = workdir / "build.json"
    if record.exists() and not rebuild and Path(json.loads(record.read_text())["compiled"]).exists():
        return json.loads(record.read_text())
    ensure_reference_venv()
    log("building the reference model (nequip-train, nequip-compile): minutes")
    result = subprocess.run(
        [str(reference_python()), str(HERE / "reference" / "build_reference.py"), str(workdir)],
        check=True, capture_output=True, text=True,
    )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    record.write_text(json.dumps(info, indent=2))
    return info


def build_ours(rebuild: bool) -> dict:
    out = BUILD / "perf" / "ours.nequip.pt2"
    command = [sys.executable, "-c", COMPILE_OURS, str(out)]
    if rebuild or not out.exists():
        log(f"compiling ours to {out}: minutes")
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        log(f"compiled ours in {time.perf_counter() - start:.0f} s")
    from nequip.benchmark import BENCHMARK_MODEL_CONFIG

    return dict(
        compiled=str(out),
        config=dict(BENCHMARK_MODEL_CONFIG, avg_num_neighbors=40.0),
        compile_call='compile_model(benchmark_model(), out, "aotinductor", "cpu", "ase")',
    )


COMPILE_OURS = """
import sys
from nequip.benchmark import benchmark_model
from nequip.compile import compile_model
model = benchmark_model()
compile_model(model, sys.argv[1], "aotinductor", "cpu", "ase")
"""


def write_inputs(num_atoms: int) -> Path:
    """The frame both sides are called on, from our neighbor list (FILE_CONTRACT §1 dtypes)."""
    import torch

    from nequip.benchmark import sic_supercell
    from nequip.data import TypeMapper, from_ase

    path = BUILD / "perf" / f"inputs_{num_atoms}.pt"
    frame = from_ase(sic_supercell(num_atoms), TypeMapper(["Si", "C"]), 5.0)
    torch.save({k: frame[k] for k in ("pos", "edge_index", "atom_types", "cell", "edge_cell_shift")}, path)
    return path


class Worker:
    def __init__(self, name: str, model_path: str, inputs: Path, threads: int):
        self.name = name
        env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "pt2_worker.py"), model_path, str(inputs), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self.ready = self.ask(None)

    def ask(self, command):
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died")
        return json.loads(line)

    def finish(self) -> float:
        peak = self.ask("quit")["peak_rss_mib"]
        self.process.wait()
        return peak


def measure_one_at_a_time(num_atoms: int, sides: dict, threads: int, rounds: int, warmup: int) -> dict:
    """As measure(), but only one side's process lives at a time (large systems: the two
    peaks together would not fit in memory): a fresh process per side and round, alternating."""
    import torch

    inputs = write_inputs(num_atoms)
    num_edges = int(torch.load(inputs)["edge_index"].shape[1])
    times = {name: [] for name in sides}
    peaks = {name: [] for name in sides}
    loaded = {}
    checks = {}
    for _ in range(rounds):
        for name, path in sides.items():
            worker = Worker(name, path, inputs, threads)
            checks[name] = worker.ask("check")  # also the first, warm-up call
            if warmup > 1:
                worker.ask(f"run {warmup - 1}")
            times[name] += worker.ask("run 1")["times"]
            loaded[name] = worker.ready["rss_loaded_mib"]
            peaks[name].append(worker.finish())
    return _row(num_atoms, num_edges, rounds, times, {k: max(v) for k, v in peaks.items()}, loaded, checks)


def _row(num_atoms, num_edges, rounds, times, peaks, loaded, checks) -> dict:
    row = dict(atoms=num_atoms, edges=num_edges, rounds=rounds, sides={})
    for name in times:
        median = statistics.median(times[name])
        row["sides"][name] = dict(
            seconds_per_call=median,
            us_per_atom_step=1e6 * median / num_atoms,
            peak_rss_mib=peaks[name],
            rss_after_load_mib=loaded[name],
            times=times[name],
            check=checks[name],
        )
    if "ours" in row["sides"] and "reference" in row["sides"]:
        ours, ref = row["sides"]["ours"], row["sides"]["reference"]
        row["time_ratio_ours_over_reference"] = ours["seconds_per_call"] / ref["seconds_per_call"]
        row["peak_memory_ratio_ours_over_reference"] = ours["peak_rss_mib"] / ref["peak_rss_mib"]
        row["model_memory_ratio_ours_over_reference"] = (ours["peak_rss_mib"] - ours["rss_after_load_mib"]) / max(
            1e-9, ref["peak_rss_mib"] - ref["rss_after_load_mib"]
        )
    return row


def measure(num_atoms: int, sides: dict, threads: int, rounds: int, warmup: int) -> dict:
    import torch

    inputs = write_inputs(num_atoms)
    num_edges = int(torch.load(inputs)["edge_index"].shape[1])
    workers = {name: Worker(name, path, inputs, threads) for name, path in sides.items()}
    checks = {name: worker.ask("check") for name, worker in workers.items()}
    for worker in workers.values():
        worker.ask(f"run {warmup}")
    times = {name: [] for name in workers}
    for _ in range(rounds):  # alternate, one call each
        for name, worker in workers.items():
            times[name] += worker.ask("run 1")["times"]
    peaks = {name: worker.finish() for name, worker in workers.items()}
    loaded = {name: worker.ready["rss_loaded_mib"] for name, worker in workers.items()}
    return _row(num_atoms, num_edges, rounds, times, peaks, loaded, checks)


def print_row(row: dict) -> None:
    print(f"\n{row['atoms']} atoms, {row['edges']} edges, median of {row['rounds']} alternating calls")
    print(f"  {'side':<10} {'s/call':>9} {'µs/atom-step':>13} {'peak RSS MiB':>13} {'RSS after load':>15} {'E total':>14}")
    for name, side in row["sides"].items():
        print(
            f"  {name:<10} {side['seconds_per_call']:>9.4f} {side['us_per_atom_step']:>13.1f} "
            f"{side['peak_rss_mib']:>13.0f} {side['rss_after_load_mib']:>15.0f} {side['check']['total_energy']:>14.6g}"
        )
    if "time_ratio_ours_over_reference" in row:
        print(
            f"  ours/reference: time {row['time_ratio_ours_over_reference']:.3f}, "
            f"peak RSS {row['peak_memory_ratio_ours_over_reference']:.3f}, "
            f"RSS above the loaded model {row['model_memory_ratio_ours_over_reference']:.3f}"
        )


def check_against_baseline(report: dict, baseline: dict) -> list:
    """The sizes at which our time or peak memory ratio is more than the tolerance above the baseline's."""
    failures = []
    base_rows = {row["atoms"]: row for row in baseline["results"]}
    for row in report["results"]:
        base = base_rows.get(row["atoms"])
        if base is None or "time_ratio_ours_over_reference" not in row:
            continue
        for what, key in (("time", "time_ratio_ours_over_reference"), ("peak RSS", "peak_memory_ratio_ours_over_reference")):
            now, then = row[key], base[key]
            status = "HIGHER" if now > then * (1 + SLOWDOWN_TOLERANCE) else "ok"
            print(f"  {row['atoms']:>6} atoms: ours/reference {what} {now:.3f} (baseline {then:.3f}) {status}")
            if status != "ok":
                failures.append(row["atoms"])
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per side, alternating")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument(
        "--one-at-a-time", type=int, default=4096, metavar="ATOMS",
        help="from this size on, one process at a time (a fresh one per side and round)",
    )
    parser.add_argument("--rebuild", action="store_true", help="compile both sides again")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--check", action="store_true", help=f"compare against {BASELINE.relative_to(ROOT)}")
    parser.add_argument("--baseline", default=str(BASELINE))
    args = parser.parse_args(argv)
    (BUILD / "perf").mkdir(parents=True, exist_ok=True)

    ours = build_ours(args.rebuild)
    sides = {"ours": ours["compiled"]}
    reference = None
    if not args.ours_only:
        reference = build_reference(args.rebuild)
        sides["reference"] = reference["compiled"]
        print(f"reference: nequip {reference['reference_version']}, torch {reference['torch']}")
        print(f"  train:   {reference['train_command']}")
        print(f"  compile: {reference['compile_command']}")
        print("  config (Hydra YAML):\n" + "\n".join("    " + line for line in reference["config_yaml"].splitlines()))
    print(f"ours: {ours['compile_call']}")
    print(f"  config: {json.dumps(ours['config'])}")
    print(f"threads: {args.threads}")

    results = []
    for num_atoms in args.sizes:
        if num_atoms >= args.one_at_a_time:
            row = measure_one_at_a_time(num_atoms, sides, args.threads, args.rounds, args.warmup)
        else:
            row = measure(num_atoms, sides, args.threads, args.rounds, args.warmup)
        print_row(row)
        results.append(row)

    from nequip.benchmark import machine_description

    report = dict(
        benchmark="AOTInductor energy+forces+stress per call, ours vs nequip 0.19.1",
        machine=machine_description(),
        threads=args.threads,
        ours=ours,
        reference=reference,
        results=results,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.check:
        baseline = json.loads(Path(args.baseline).read_text())
        print(f"\nagainst {args.baseline} (fails above +{100 * SLOWDOWN_TOLERANCE:.0f}%):")
        failures = check_against_baseline(report, baseline)
        if failures:
            print(f"more than {100 * SLOWDOWN_TOLERANCE:.0f}% above the baseline at {sorted(set(failures))} atoms")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
