"""Active learning with a committee of NequIP models on Cu/Au, EMT standing in for DFT (issue 37).

    python examples/active_learning/run.py --output al_output

Round 0 trains four tiny models (committee.yaml; trainer.seed and data.split.seed 0 to 3) on a
few EMT frames.
Every round then

  1. compiles the four into one committee file (nequip-compile ... committee.nequip.pth),
  2. measures the committee's force MAE on a fixed held-out test set: frames of EMT MD at the
     temperature of step 3, the configurations the potential is meant for,
  3. runs hot LAMMPS MD driven by the committee mean, with `pair_style nequip deviation
     model_devi.out every N` and a dump of the frames at the same steps,
  4. takes the frames whose max force deviation lies in [TRUST_LO, TRUST_HI) as candidates
     (DP-GEN's trust levels) and selects up to SELECTED_PER_ROUND of them, spread over the run,
  5. labels those with ASE's EMT, adds them to the training data and fine-tunes every member
     from its best.ckpt of the round before (finetune.yaml),

three times; the committee of the last round is compiled and tested too. Each round prints the
training frames, the test force MAE, and the MD frames below, inside and above the window.
Everything lands in --output (docs/active_learning.md lists it); summary.json holds the
per-round figures.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
sys.path.insert(0, str(EXAMPLES))
from make_emt_data import LATTICE_CONSTANT, emt_labelled  # noqa: E402  (examples/ is not a package)

TYPE_NAMES = ["Cu", "Au"]  # LAMMPS types 1, 2: the models' type order
MEMBERS = 4
ROUNDS = 3  # rounds of MD, selection, labelling and fine-tuning after round 0's training
INITIAL_FRAMES = 8  # make_emt_data.py's rattled, strained fcc cells

# The MD: a 32-atom Cu/Au fcc cell at 1000 K, where atoms move further from their lattice sites,
# and come closer to each other, than in the rattled training frames.
TEMPERATURE_K = 1000.0
MD_STEPS, DEVIATION_EVERY = 200, 5  # 41 frames (step 0 included) per round
TIMESTEP_PS = 0.002

# DP-GEN's trust levels on the max force deviation (eV/Å) of a frame. Below TRUST_LO the models
# agree to within their own error on the data they know (these tiny members reach a validation
# force MAE of about 0.1-0.2 eV/Å), so the frame counts as known and labelling it would teach
# little. At or above TRUST_HI they disagree by more than the forces themselves (RMS 0.8 eV/Å
# at TEMPERATURE_K): the MD has left the region the models describe at all, such frames are
# ones the real dynamics never visits, and labelling them wastes reference calculations and
# drags the fit towards them. The frames between are the candidates. Production models sit
# lower (DP-GEN's examples use about 0.05 and 0.15 eV/Å); the window scales with the models'
# error. (What the window cannot see: a blind spot all members share. Without the ZBL
# repulsion of committee.yaml the first committee let atoms fuse, and agreed about it.)
TRUST_LO, TRUST_HI = 0.1, 1.0
SELECTED_PER_ROUND = 8

# the held-out test set: EMT MD at TEMPERATURE_K from cells no other step uses
TEST_TRAJECTORIES, TEST_FRAMES_PER_TRAJECTORY = 4, 5
TEST_EQUILIBRATION_STEPS, TEST_SAMPLE_EVERY = 60, 20


# one thread per process: the members train side by side on the cores, and the results do not
# depend on the machine's core count (torch's reductions are ordered by their threads)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def start(command, cwd: Path, log: Path):
    """Start one command (a project CLI, as a user would) in ``cwd``, its output going to ``log``."""
    command = [str(c) for c in command]
    print(f"$ {shlex.join(command)}", flush=True)
    stream = open(log, "w")
    return subprocess.Popen(command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT, env=ENV), stream, log


def finish(job) -> None:
    """Wait for a started command; if it failed, stop here with the end of its log."""
    process, stream, log = job
    process.wait()
    stream.close()
    if process.returncode != 0:
        sys.exit(f"{process.args[0]} failed (exit code {process.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")


def stop(job) -> None:
    """End a started command that is no longer wanted (this run is stopping)."""
    process, stream, _ = job
    process.terminate()
    process.wait()
    stream.close()


def run(command, cwd: Path, log: Path) -> None:
    finish(start(command, cwd, log))


def run_side_by_side(commands, cwd: Path, logs, jobs: int) -> None:
    """Run ``commands`` (the members' trainings), ``jobs`` at a time, each writing to its log."""
    pending, running = list(zip(commands, logs)), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                command, log = pending.pop(0)
                running.append(start(command, cwd, log))
            finish(running[0])
            running.pop(0)
    finally:  # a failed member, or this run stopping, stops the others
        for job in running:
            stop(job)


def write_frames(path: Path, frames) -> None:
    import ase.io

    from nequip.utils.atomic_io import atomic_path

    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")


def read_frames(path: Path):
    import ase.io

    return ase.io.read(path, index=":")


def alloy_cell(seed: int):
    """A 2x2x2 cubic fcc cell (32 atoms) of random Cu/Au, half of each on average (the test
    frames and the MD explore the same compositions), at Vegard's lattice constant."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANT["Cu"], cubic=True).repeat((2, 2, 2))
    atoms.symbols = rng.choice(TYPE_NAMES, size=len(atoms))
    au_fraction = np.mean(atoms.symbols == "Au")
    a = (1 - au_fraction) * LATTICE_CONSTANT["Cu"] + au_fraction * LATTICE_CONSTANT["Au"]
    atoms.set_cell(atoms.cell[:] * a / LATTICE_CONSTANT["Cu"], scale_atoms=True)
    return atoms


def emt_md_test_frames():
    """The held-out test set: frames of EMT Langevin MD at TEMPERATURE_K (EMT labels)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    frames = []
    for trajectory in range(TEST_TRAJECTORIES):
        seed = 1000 + trajectory
        atoms = alloy_cell(seed)
        atoms.calc = EMT()
        rng = np.random.default_rng(seed)
        # Maxwell-Boltzmann momenta at twice the temperature, half of which goes into the potential
        # energy (ASE's function for it changed its name across the releases we take)
        kinetic = np.sqrt(atoms.get_masses()[:, None] * units.kB * 2 * TEMPERATURE_K)
        atoms.set_momenta(kinetic * rng.standard_normal((len(atoms), 3)))
        dynamics = Langevin(atoms, TIMESTEP_PS * 1000 * units.fs, temperature_K=TEMPERATURE_K,
                            friction=0.01 / units.fs, fixcm=False, rng=rng)  # fmt: skip
        dynamics.run(TEST_EQUILIBRATION_STEPS)
        for _ in range(TEST_FRAMES_PER_TRAJECTORY):
            dynamics.run(TEST_SAMPLE_EVERY)
            frames.append(atoms.copy())
    return [emt_labelled(atoms) for atoms in frames]


def make_data(out: Path) -> None:
    """data/train_0.xyz (make_emt_data.py) and data/test.xyz (EMT MD)."""
    data = out / "data"
    data.mkdir()
    maker = EXAMPLES / "make_emt_data.py"
    run([sys.executable, maker, data / "train_0.xyz", "--frames", INITIAL_FRAMES, "--seed", 0], out, data / "train_0.log")
    write_frames(data / "test.xyz", emt_md_test_frames())


def train_members(out: Path, round_index: int, jobs: int) -> None:
    """Round 0: the members from scratch (committee.yaml); later rounds: each fine-tuned from its
    best.ckpt of the round before on data/train_<round>.xyz (finetune.yaml)."""
    directory = out / f"round_{round_index}"
    directory.mkdir(parents=True, exist_ok=True)
    commands, logs = [], []
    for member in range(MEMBERS):
        overrides = [
            f"output_dir={directory.name}/member_{member}",
            f"data.file=data/train_{round_index}.xyz",
            f"data.split.seed={member}",
            f"trainer.seed={member}",
        ]
        if round_index == 0:
            config = HERE / "committee.yaml"
        else:
            config = HERE / "finetune.yaml"
            overrides.append(f"model.from_checkpoint=round_{round_index - 1}/member_{member}/best.ckpt")
        commands.append([BIN / "nequip-train", config, *overrides])
        logs.append(directory / f"member_{member}.log")
    run_side_by_side(commands, out, logs, jobs)


def compile_committee(out: Path, round_index: int) -> Path:
    directory = out / f"round_{round_index}"
    checkpoints = [f"{directory.name}/member_{member}/best.ckpt" for member in range(MEMBERS)]
    committee = directory / "committee.nequip.pth"
    run([BIN / "nequip-compile", *checkpoints, committee.relative_to(out), "--mode", "torchscript", "--device", "cpu"],
        out, directory / "compile.log")  # fmt: skip
    return committee


def committee_test_errors(committee: Path, test_frames) -> dict:
    """The committee's force MAE on the test frames (eV/Å) and its mean max force deviation there,
    through the ASE calculator."""
    from nequip.ase import NequIPCalculator

    calculator = NequIPCalculator(str(committee))
    errors, deviations = [], []
    for frame in test_frames:
        atoms = frame.copy()
        atoms.calc = calculator
        errors.append(np.abs(atoms.get_forces() - frame.get_forces()).ravel())
        deviations.append(calculator.get_property("max_force_deviation", atoms))
    return dict(test_force_mae=float(np.mean(np.concatenate(errors))), test_max_force_deviation=float(np.mean(deviations)))


LAMMPS_INPUT = """\
# hot MD driven by the committee mean; every {every} steps the models' deviation (model_devi.out)
# and the frame (frames.dump) are written, at the same steps
units           metal
atom_style      atomic
atom_modify     map yes
boundary        p p p
read_data       system.data             # LAMMPS types 1 = Cu, 2 = Au
pair_style      nequip deviation model_devi.out every {every}
pair_coeff      * * {model} Cu Au
velocity        all create {initial_temperature} {seed} mom yes rot yes dist gaussian
fix             integrate all nve
fix             thermostat all langevin {temperature} {temperature} 0.1 {seed}
timestep        {timestep}
dump            frames all custom {every} frames.dump id element x y z
dump_modify     frames element Cu Au sort id
thermo          {thermo}
run             {steps}
"""


def lammps_md(out: Path, round_index: int, committee: Path, meanwhile) -> Path:
    """LAMMPS MD with the committee, on one rank, in round_<round>/md (written whole: the run
    goes to a temporary directory beside it, renamed when LAMMPS has finished); ``meanwhile()``
    is called while it runs (on the other core)."""
    import ase.io

    directory = out / f"round_{round_index}" / "md"
    work = Path(tempfile.mkdtemp(prefix=".md.", dir=directory.parent))
    try:
        seed = 100 + round_index  # a new cell and new velocities each round
        ase.io.write(work / "system.data", alloy_cell(seed), format="lammps-data", specorder=TYPE_NAMES, masses=True)
        (work / "in.lammps").write_text(LAMMPS_INPUT.format(
            every=DEVIATION_EVERY, model=os.path.relpath(committee, directory), temperature=TEMPERATURE_K,
            initial_temperature=2 * TEMPERATURE_K,
            seed=4928459 + round_index, timestep=TIMESTEP_PS, thermo=5 * DEVIATION_EVERY, steps=MD_STEPS,
        ))  # fmt: skip
        job = start([BIN / "lmp", "-in", "in.lammps", "-log", "none", "-nocite"], work, work / "log.lammps")
        try:
            meanwhile()
        except BaseException:
            stop(job)
            raise
        finish(job)
        os.replace(work, directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return directory


def read_model_devi(path: Path) -> dict:
    """model_devi.out (DeePMD-kit's columns) as {column name: array}."""
    lines = path.read_text().splitlines()
    names = lines[0].lstrip("#").split()
    values = np.loadtxt(lines[1:], ndmin=2)
    return {name: values[:, column] for column, name in enumerate(names)}


def select_frames(md: Path) -> dict:
    """The MD frames whose max force deviation lies in [TRUST_LO, TRUST_HI), and up to
    SELECTED_PER_ROUND of them evenly spread over the run (neighbouring frames of one run are
    alike: spreading the picks gives different configurations)."""
    import ase.io

    deviation = read_model_devi(md / "model_devi.out")
    frames = ase.io.read(md / "frames.dump", format="lammps-dump-text", index=":")
    steps = [atoms.info["timestep"] for atoms in frames]
    if steps != deviation["step"].astype(int).tolist():
        sys.exit(f"{md}: the dump's steps {steps} are not those of model_devi.out {deviation['step'].tolist()}")
    max_deviation = deviation["max_devi_f"]
    candidates = np.flatnonzero((max_deviation >= TRUST_LO) & (max_deviation < TRUST_HI))
    picks = np.unique(np.linspace(0, len(candidates) - 1, min(SELECTED_PER_ROUND, len(candidates))).round().astype(int))
    selected = candidates[picks] if len(candidates) else candidates
    return dict(
        md_frames=len(frames),
        accurate=int(np.sum(max_deviation < TRUST_LO)),
        candidates=len(candidates),
        failed=int(np.sum(max_deviation >= TRUST_HI)),
        selected=len(selected),
        max_force_deviation_range=[float(max_deviation.min()), float(max_deviation.max())],
        frames=[frames[i] for i in selected],
    )


def format_row(figures: dict) -> str:
    row = (f"{figures['round']:>5}  {figures['training_frames']:>15}  {figures['test_force_mae']:>20.4f}  "
           f"{figures['test_max_force_deviation']:>14.4f}")  # fmt: skip
    if "md_frames" in figures:
        row += (f"  {figures['md_frames']:>9}  {figures['accurate']:>8}  {figures['candidates']:>10}  "
                f"{figures['failed']:>6}  {figures['selected']:>8}")  # fmt: skip
    return row


HEADER = (
    "round  training frames  test force MAE, eV/Å  test max dev.  MD frames  accurate  candidates  failed  selected"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("al_output"), help="a new (or empty) directory")
    parser.add_argument("--jobs", type=int, default=min(MEMBERS, os.cpu_count() or 1),
                        help="members trained at once, one thread each (default: the cores, at most 4)")  # fmt: skip
    args = parser.parse_args(argv)
    # SIGTERM ends the run the way Ctrl-C does: the commands it started are stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = args.output.resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"{args.output} is not empty: give a new directory (each run starts from round 0)")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    make_data(out)
    test_frames = read_frames(out / "data" / "test.xyz")
    rounds = []
    for round_index in range(ROUNDS + 1):
        print(f"\n# round {round_index}", flush=True)
        train_members(out, round_index, args.jobs)
        committee = compile_committee(out, round_index)
        figures = dict(round=round_index, training_frames=len(read_frames(out / "data" / f"train_{round_index}.xyz")))
        if round_index == ROUNDS:
            figures.update(committee_test_errors(committee, test_frames))
        else:
            md = lammps_md(out, round_index, committee, lambda: figures.update(committee_test_errors(committee, test_frames)))
            selection = select_frames(md)
            labelled = [emt_labelled(atoms) for atoms in selection.pop("frames")]
            write_frames(out / f"round_{round_index}" / "selected.xyz", labelled)
            training = read_frames(out / "data" / f"train_{round_index}.xyz")
            write_frames(out / "data" / f"train_{round_index + 1}.xyz", training + labelled)
            figures.update(selection)
        rounds.append(figures)
        print(HEADER + "\n" + format_row(figures), flush=True)

    elapsed = time.perf_counter() - start
    summary = dict(
        trust_lo=TRUST_LO, trust_hi=TRUST_HI, temperature_K=TEMPERATURE_K, members=MEMBERS, rounds=rounds,
        seconds=round(elapsed, 1),
    )  # fmt: skip
    from nequip.utils.atomic_io import atomic_path

    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nActive learning, {MEMBERS} members, max force deviation window [{TRUST_LO}, {TRUST_HI}) eV/Å, "
          f"MD at {TEMPERATURE_K:g} K; {elapsed:.0f} s, everything in {out}")  # fmt: skip
    print(HEADER)
    for figures in rounds:
        print(format_row(figures))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
