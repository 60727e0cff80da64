"""pair_style nequip on several MPI ranks: strong and weak scaling on this machine, and the work
per owned atom as a function of the sub-domain size.

    .venv/bin/python benchmarks/lammps_scaling.py --num-layers 4 --num-features 32 --l-max 2 \
        --parts strong --strong-cells 8 16 --configurations 1x1 2x1 --steps 1 --warmup 0 \
        --json docs/lammps_scaling.json

Several ranks run the model layer by layer: each rank evaluates the edges of its own atoms and
exchanges the ghosts' node features with the other ranks after every layer. Three measurements,
each LAMMPS run a separate ``mpirun -np K lmp`` (the mpich wheel's launcher) with
``OMP_NUM_THREADS`` torch threads per rank:

- strong scaling: the same 3C-SiC system (``--strong-cells``, one size after the other) in the
  ``--configurations`` RANKSxTHREADS, alternating ``--repeats`` times: medians of LAMMPS' loop
  time per step, the speed-up over the first configuration, the peak resident memory of the
  largest rank (``/usr/bin/time``, when present) and the share of LAMMPS' "Comm" section;
- weak scaling: ``--weak-atoms`` atoms per rank on 1 and 2 ranks;
- work: ``run 0`` on 8 ranks in a 2x2x2 grid (cubic sub-domains of side s) for several system
  sizes, with the atoms (owned and ghost nodes) and edges the model evaluated per owned atom
  (the plugin reports them at the end of each run), beside the geometric estimate of the atoms:
  the volume within w = cutoff + skin of a cube of side s per volume of the cube.

The model is the benchmark architecture of DESIGN.md, by default made shallow (``--num-layers``,
default 2) and narrow (``--num-features``, ``--l-max``) so that the measurements fit a few
minutes. ``--mode aotinductor`` (the default) compiles a ``.nequip.pt2`` of target
pair_nequip_domain (the whole model for one rank and its parts for several), ``--mode
torchscript`` a ``.nequip.pth``; the file is compiled once to ``--out-dir`` and reused.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk

from nequip.benchmark import benchmark_model, machine_description
from nequip.compile import compile_model
from nequip.data import TypeMapper, from_ase, keys

BIN = Path(sys.executable).parent
SIC_A = 4.36  # Å, 3C-SiC conventional cell (8 atoms)
SKIN = 2.0  # Å, LAMMPS' default neighbor skin in metal units
# the timed run reuses the set-up of the run before it: its loop time is that of its steps only
INPUT = """
units metal
atom_style atomic
atom_modify map yes
{processors}
read_data {data}
pair_style nequip
pair_coeff * * {model} Si C
velocity all create 300 12345 loop geom
timestep 0.001
fix integrate all nve
thermo 0
run {warmup}
run {steps} pre no
write_dump all custom {forces} id fx fy fz modify sort id format float %.10g
"""
LOOP_TIME = re.compile(r"^Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms", re.MULTILINE)
# LAMMPS' breakdown of the last run: "Comm    | min | avg | max | %varavg | %total"
COMM_SHARE = re.compile(r"^Comm\s*\|.*\|\s*(\S+)\s*$", re.MULTILINE)
TIME = Path("/usr/bin/time")
PEAK_KIB = re.compile(r"^nequip-peak-kib (\d+)$", re.MULTILINE)
GRAPH_SIZE = re.compile(r"the model evaluated (\S+) atoms and (\S+) edges per owned atom")


def sic(cells) -> "ase.Atoms":
    """3C-SiC, ``cells`` conventional cells along x, y, z, rattled by 0.05 Å."""
    atoms = bulk("SiC", "zincblende", a=SIC_A, cubic=True).repeat(cells)
    atoms.rattle(0.05, seed=0)
    return atoms


def run_lammps(directory: Path, atoms, model: Path, ranks: int, threads: int, steps: int, warmup: int,
               processors: str = "") -> dict:  # fmt: skip
    """One LAMMPS run; seconds per step of its last ``run`` and the plugin's graph-size report."""
    data = directory / f"sic_{len(atoms)}.data"
    if not data.exists():
        ase.io.write(data, atoms, format="lammps-data", specorder=["Si", "C"], masses=True)
    script = directory / "in.lammps"
    forces = directory / "forces.dump"
    script.write_text(INPUT.format(data=data, processors=processors, model=model, warmup=warmup, steps=steps,
                                   forces=forces))  # fmt: skip
    log = directory / "log.lammps"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # each rank's peak resident memory, when GNU time is there to say it
    timed = [str(TIME), "-f", "nequip-peak-kib %M"] if TIME.exists() else []
    command = [str(BIN / "mpirun"), "-np", str(ranks), *timed, str(BIN / "lmp"), "-in", str(script), "-log", str(log),
               "-screen", "none", "-nocite"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    text = log.read_text() if log.exists() else ""
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed ({' '.join(command)}):\n{text[-2000:]}\n{result.stderr[-2000:]}")
    loop_seconds, _, loop_steps, _ = LOOP_TIME.findall(text)[-1]
    row = dict(atoms=len(atoms), ranks=ranks, threads=threads)
    if int(loop_steps):
        row["seconds_per_step"] = float(loop_seconds) / int(loop_steps)
    comm = COMM_SHARE.findall(text)
    if comm and int(loop_steps):
        row["comm_percent"] = float(comm[-1])
    peaks = PEAK_KIB.findall(result.stderr)
    if peaks:
        row["peak_rss_mib_per_rank"] = max(int(kib) for kib in peaks) / 1024
    # the last thermo line (Step Temp E_pair E_mol TotEng Press): the same on any number of ranks
    lines = text.splitlines()
    header = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    end = next(i for i in range(header, len(lines)) if lines[i].startswith("Loop time"))
    row["final_thermo"] = [float(word) for word in lines[end - 1].split()]
    row["forces"] = np.loadtxt(forces, skiprows=9)[:, 1:]  # by atom ID; not written to the JSON
    reports = GRAPH_SIZE.findall(text)
    if reports:
        row["atoms_per_owned_atom"], row["edges_per_owned_atom"] = map(float, reports[-1])
    return row


def strong_scaling(directory, model, cells, configurations, repeats, steps, warmup):
    atoms = sic(cells)
    times = {configuration: [] for configuration in configurations}
    report = {}
    for _ in range(repeats):  # alternate the configurations: the machine's load drifts
        for ranks, threads in configurations:
            row = run_lammps(directory, atoms, model, ranks, threads, steps, warmup)
            times[ranks, threads].append(row["seconds_per_step"])
            report[ranks, threads] = row
    rows = []
    base = statistics.median(times[configurations[0]])
    reference_pe = report[configurations[0]]["final_thermo"][2]
    reference_forces = report[configurations[0]]["forces"]
    for configuration in configurations:
        row = dict(report[configuration], seconds_per_step=statistics.median(times[configuration]),
                   runs=times[configuration])  # fmt: skip
        row["max_force_difference_eV_per_A"] = float(np.abs(row.pop("forces") - reference_forces).max())
        row["max_force_eV_per_A"] = float(np.abs(reference_forces).max())
        row["us_per_atom_step"] = 1e6 * row["seconds_per_step"] / len(atoms)
        row["speedup"] = base / row["seconds_per_step"]
        row["potential_energy_eV"] = row["final_thermo"][2]
        row["relative_energy_difference"] = abs(row["potential_energy_eV"] - reference_pe) / abs(reference_pe)
        rows.append(row)
    return rows


def shell_factor(side: float, width: float) -> float:
    """Volume of a cube of side ``side`` grown by ``width`` in every direction (the points within
    ``width`` of it: rounded edges and corners), per volume of the cube."""
    grown = side**3 + 6 * side**2 * width + 3 * np.pi * side * width**2 + 4 / 3 * np.pi * width**3
    return grown / side**3


def redundant_work(directory, model, sizes, w_nodes, edges_per_atom):
    """run 0 on 8 ranks (2x2x2): graph size per owned atom against the cubic estimate."""
    rows = []
    for n in sizes:
        atoms = sic((n, n, n))
        row = run_lammps(directory, atoms, model, ranks=8, threads=1, steps=0, warmup=0, processors="processors 2 2 2")
        del row["forces"]
        side = n * SIC_A / 2
        row.update(
            subdomain_side=side,
            atoms_per_rank=len(atoms) / 8,
            estimate_atoms_per_owned_atom=shell_factor(side, w_nodes),
            # every rank evaluates the edges of its own atoms: 1 is exact
            work_factor=row["edges_per_owned_atom"] / edges_per_atom,
        )
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-features", type=int, default=16)
    parser.add_argument("--l-max", type=int, default=1)
    parser.add_argument("--strong-cells", type=int, nargs="+", default=[8],
                        help="strong scaling on n x n x n cells (8 n^3 atoms), each n in turn")
    parser.add_argument("--weak-atoms", type=int, default=4096, help="atoms per rank (8 n^3)")
    parser.add_argument("--work-cells", type=int, nargs="+", default=[4, 6, 8, 12, 16, 20],
                        help="redundant work on n x n x n cells split 2x2x2")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=["strong", "weak", "work"], default=["strong", "weak", "work"],
                        help="what to measure; the others are kept from an existing --json file")  # fmt: skip
    parser.add_argument("--mode", choices=["aotinductor", "torchscript"], default="aotinductor",
                        help="the file: a .pt2 of target pair_nequip_domain or a .pth")
    parser.add_argument("--configurations", nargs="+", default=["1x1", "1x2", "2x1"],
                        help="strong scaling's RANKSxTHREADS, the first the reference of the speed-ups")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/lammps_scaling"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    overrides = dict(num_layers=args.num_layers, num_features=args.num_features, l_max=args.l_max)
    model = benchmark_model(**overrides)
    extension = ".nequip.pt2" if args.mode == "aotinductor" else ".nequip.pth"
    name = f"scaling_{args.num_layers}x{args.num_features}_l{args.l_max}{extension}"
    model_path = args.out_dir / name
    if not model_path.exists():
        start = time.perf_counter()
        target = "pair_nequip_domain" if args.mode == "aotinductor" else None
        compile_model(model, model_path, mode=args.mode, device="cpu", target=target)
        print(f"compiled {model_path} in {time.perf_counter() - start:.0f} s", flush=True)
    r_max = model.r_max
    unit = sic((4, 4, 4))
    edges_per_atom = from_ase(unit, TypeMapper(model.type_names), r_max)[keys.EDGE_INDEX].shape[1] / len(unit)

    report = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    w_nodes = r_max + SKIN
    with tempfile.TemporaryDirectory(dir=args.out_dir) as scratch:
        directory = Path(scratch)
        if "strong" in args.parts:
            print("strong scaling", flush=True)
            configurations = [tuple(int(n) for n in c.split("x")) for c in args.configurations]
            for cells in args.strong_cells:
                rows = strong_scaling(directory, model_path, (cells,) * 3, configurations, args.repeats, args.steps,
                                      args.warmup)  # fmt: skip
                for row in rows:
                    row["file"] = name
                    if "edges_per_owned_atom" in row:
                        row["work_factor"] = row["edges_per_owned_atom"] / edges_per_atom
                # one list for every size and file measured, this pair's rows replaced
                kept = [row for row in report.get("strong", [])
                        if (row["atoms"], row.get("file")) != (rows[0]["atoms"], name)]  # fmt: skip
                report["strong"] = sorted(kept + rows, key=lambda row: row["atoms"])
                for row in rows:
                    memory = f", peak {row['peak_rss_mib_per_rank']:.0f} MiB/rank" if "peak_rss_mib_per_rank" in row else ""
                    print(f"  {row['atoms']} atoms, {row['ranks']} rank(s) x {row['threads']} thread(s): "
                          f"{row['seconds_per_step']:.2f} s/step, {row['us_per_atom_step']:.1f} µs/atom-step, "
                          f"speed-up {row['speedup']:.2f}, Comm {row.get('comm_percent', 0):.1f}%{memory}, "
                          f"energy vs first {row['relative_energy_difference']:.1e}, "
                          f"forces vs first {row['max_force_difference_eV_per_A']:.1e} eV/Å "
                          f"(largest {row['max_force_eV_per_A']:.2f}), "
                          f"work factor {row.get('work_factor', 1.0):.3f}", flush=True)  # fmt: skip

        if "weak" in args.parts:
            print("weak scaling", flush=True)
            n = round((args.weak_atoms / 8) ** (1 / 3))
            one = strong_scaling(directory, model_path, (n, n, n), [(1, 1)], args.repeats, args.steps, args.warmup)[0]
            two = strong_scaling(directory, model_path, (2 * n, n, n), [(2, 1)], args.repeats, args.steps, args.warmup)[0]
            report["weak"] = dict(one_rank=one, two_ranks=two, efficiency=one["seconds_per_step"] / two["seconds_per_step"])
            print(f"  {one['atoms']} atoms on 1 rank: {one['seconds_per_step'] * 1e3:.1f} ms/step; {two['atoms']} on 2: "
                  f"{two['seconds_per_step'] * 1e3:.1f} ms/step; efficiency {report['weak']['efficiency']:.2f}", flush=True)  # fmt: skip

        if "work" in args.parts:
            print("redundant work (8 ranks, 2x2x2)", flush=True)
            report["redundant_work"] = redundant_work(directory, model_path, args.work_cells, w_nodes, edges_per_atom)
            for row in report["redundant_work"]:
                print(f"  side {row['subdomain_side']:.1f} Å ({row['atoms_per_rank']:.0f} atoms/rank): "
                      f"atoms/owned {row['atoms_per_owned_atom']:.2f} (cube estimate {row['estimate_atoms_per_owned_atom']:.2f}), "
                      f"work factor {row['work_factor']:.2f}", flush=True)  # fmt: skip

    command = " ".join(["benchmarks/lammps_scaling.py", *(argv if argv is not None else sys.argv[1:])])
    report.setdefault("commands", []).append(command)  # one per --parts run that filled this file
    report.update(
        date=time.strftime("%Y-%m-%d"),
        machine=machine_description(),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        model=dict(overrides, r_max=r_max, ghost_cutoff_A=w_nodes, file=str(model_path)),
        edges_per_atom=edges_per_atom,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
