"""pair_style nequip on several MPI ranks (`mpirun -np K lmp`, the launcher of the mpich wheel):
the same energies, forces, pressure, per-atom energies, per-atom virials and NVE trajectory as
one rank, per-atom virials (compute stress/atom) equal to the eager model's, and each rank
evaluating the edges of its own atoms only.

Each rank evaluates the edges of its own atoms, layer by layer, and exchanges the ghosts' node
features with the other ranks between layers. The matrix runs for both kinds of file that do
(KINDS): a `.pt2` of the `pair_nequip_domain` target (the whole model and its parts, two layers)
and a TorchScript file of three layers (so that a middle layer both receives its ghosts'
features and sends their gradients back). 4 ranks oversubscribe this machine's 2 cores, which
changes the timing, not the results.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from fixtures.compiled import R_MAX, TYPE_NAMES
from lammps_harness import reference_calculator
from fixtures.edited_files import with_pt2_metadata, with_pth_metadata
from nequip.data import TypeMapper, compute_neighbor_list, from_ase

BIN = Path(sys.executable).parent
RANKS = (1, 2, 4)
NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/Å^3 -> bar, what stress/atom multiplies by
NVE_STEPS = 200
NVE_THERMO_EVERY = 50

PREAMBLE = """
units metal
atom_style atomic
{atom_map}
newton {newton}
boundary {boundary}
{processors}
read_data {data}
pair_style nequip
pair_coeff * * {model} Si C
"""

# run 0: globals from the thermo line, per atom (sorted by ID) from a dump; its columns after
# the ID: forces 0-2, energy 3, per-atom virial 4-9, the rank that owns the atom 10
SINGLE_POINT = """
compute atom_energy all pe/atom
compute atom_stress all stress/atom NULL virial
compute virial all pressure NULL virial
thermo_style custom step pe c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] c_virial[6] vol
thermo_modify format float %.17g
dump atoms all custom 1 atoms.dump id fx fy fz c_atom_energy &
    c_atom_stress[1] c_atom_stress[2] c_atom_stress[3] c_atom_stress[4] c_atom_stress[5] c_atom_stress[6] proc
dump_modify atoms sort id format float %.17g
run 0
"""

NVE = f"""
velocity all create 600 4928459 loop geom
timestep 0.001
fix integrate all nve
thermo {NVE_THERMO_EVERY}
thermo_style custom step pe ke etotal press
thermo_modify format float %.17g
run {NVE_STEPS}
write_dump all custom atoms.dump id x y z vx vy vz modify sort id format float %.17g
"""


@dataclass
class Run:
    log: str
    thermo: np.ndarray  # rows = thermo lines, columns = thermo_style fields
    atoms: np.ndarray  # rows = atoms sorted by ID, columns = the dump's fields after id


def write_data(atoms: Atoms, path: Path) -> Path:
    write(path, atoms, format="lammps-data", specorder=["Si", "C"], masses=True)
    return path


def lammps(directory: Path, ranks: int, data: Path, model: Path, body: str, boundary="p p p",
           processors="", newton="on", atom_map=True, check=True, screen=False) -> Run:  # fmt: skip
    """``mpirun -np ranks lmp`` in ``directory`` on ``data`` with ``model``, then ``body``.
    ``screen``: every rank's screen output (on standard output) is kept, after the log: what
    ranks other than 0 print (their errors and warnings) appears only there."""
    directory.mkdir(parents=True, exist_ok=True)
    atom_map = "atom_modify map yes" if atom_map else ""
    script = PREAMBLE.format(atom_map=atom_map, newton=newton, boundary=boundary, processors=processors, data=data,
                             model=model) + body  # fmt: skip
    (directory / "in.lammps").write_text(script)
    # 2 cores: torch threads fill them whatever the number of ranks
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // ranks)))
    result = subprocess.run(
        [str(BIN / "mpirun"), "-np", str(ranks), str(BIN / "lmp"), "-in", "in.lammps", "-log", "log.lammps",
         *([] if screen else ["-screen", "none"]), "-nocite"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = (directory / "log.lammps").read_text() if (directory / "log.lammps").exists() else ""
    if not check:
        return Run(log + result.stdout + result.stderr, np.empty(0), np.empty(0))
    if screen:
        log += result.stdout
    assert result.returncode == 0, f"{ranks} ranks failed:\n{log[-3000:]}\n{result.stdout}\n{result.stderr}"
    return Run(log, thermo_table(log), np.loadtxt(directory / "atoms.dump", skiprows=9)[:, 1:])


def thermo_table(log: str) -> np.ndarray:
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    end = next(i for i, line in enumerate(lines) if line.startswith("Loop time"))
    # warnings may come between the rows (atoms of the tiny random model coming too close in NVE)
    rows = [line for line in lines[start + 1 : end] if not line.startswith("WARNING")]
    return np.array([[float(word) for word in line.split()] for line in rows])


def bulk_sic() -> Atoms:
    """4096 atoms of 3C-SiC (8x8x8 conventional cells, 34.9 Å), rattled."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(8)
    atoms.rattle(0.1, seed=3)
    return atoms


def sic_slab() -> Atoms:
    """2048 atoms: a 3C-SiC slab four cells thick, non-periodic along z (two surfaces)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((8, 8, 4))
    atoms.pbc = (True, True, False)
    atoms.center(vacuum=5.0, axis=2)
    atoms.rattle(0.1, seed=4)
    return atoms


def sheared_sic() -> Atoms:
    """1728 atoms of 3C-SiC in a triclinic cell (rows lower triangular, as LAMMPS wants)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(6)
    atoms.set_cell(atoms.cell[:] + [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [-1.5, 1.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.1, seed=6)
    return atoms


def small_sic() -> Atoms:
    """64 atoms of 3C-SiC, rattled: small enough for the eager model on the side."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=5)
    return atoms


def cluster_at_the_bottom() -> Atoms:
    """360 atoms of 3C-SiC (z from 1 to 22 Å) at the bottom of a 48 Å box, fixed boundaries,
    split in z: on 2 ranks the upper one owns no atoms, only ghosts; on 4 the third owns none
    and the fourth has no atoms at all, not even ghosts (its exchanges are empty)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((3, 3, 5))
    atoms.rattle(0.1, seed=8)
    atoms.positions += 1.0
    atoms.set_cell([15.08, 15.08, 48.0])
    atoms.pbc = False
    return atoms


def assert_close(actual, expected, rtol, what):
    """Equal to ``rtol`` relative to the largest entry of ``expected``."""
    expected = np.asarray(expected)
    scale = max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale, err_msg=what)


@pytest.fixture(scope="module")
def domain_file(compiled_models) -> Path:
    return compiled_models["float64", "aotinductor", "pair_nequip_domain"]


# the two kinds of file that run layer by layer
KINDS = ("pt2", "pth")


@pytest.fixture(scope="module")
def files(domain_file, deep_model) -> Dict[str, Path]:
    return {"pt2": domain_file, "pth": deep_model.pth}


@pytest.fixture(scope="module")
def eager_models(compiled_models, deep_model):
    """The eager model each kind of file was compiled from."""
    return {"pt2": compiled_models.eager["float64"], "pth": deep_model.eager}


SYSTEMS = {
    # name: (structure, boundary, processors): the slab is split across its thickness, the
    # cluster along z so that ranks above it are empty
    "bulk": (bulk_sic, "p p p", ""),
    "slab": (sic_slab, "p p s", "processors * * {ranks}"),
    "triclinic": (sheared_sic, "p p p", ""),
    "empty_ranks": (cluster_at_the_bottom, "f f f", "processors 1 1 {ranks}"),
}


@pytest.fixture(scope="module")
def single_points(files, tmp_path_factory) -> Dict[Tuple[str, str, int], Run]:
    """run 0 of every system on 1, 2 and 4 ranks, with each kind of file."""
    directory = tmp_path_factory.mktemp("multirank")
    runs = {}
    for name, (structure, boundary, processors) in SYSTEMS.items():
        data = write_data(structure(), directory / f"{name}.data")
        for kind in KINDS:
            for ranks in RANKS:
                grid = processors.format(ranks=ranks) if ranks > 1 else ""
                runs[kind, name, ranks] = lammps(directory / f"{kind}_{name}_{ranks}", ranks, data, files[kind],
                                                 SINGLE_POINT, boundary=boundary, processors=grid)  # fmt: skip
    return runs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("ranks", RANKS[1:])
def test_ranks_give_the_one_rank_results(single_points, kind, system, ranks):
    assert_same_single_point(single_points[kind, system, ranks], single_points[kind, system, 1])


def assert_same_single_point(many: Run, one: Run) -> None:
    """SINGLE_POINT on several ranks equals one rank: energy, pressure, forces, per-atom
    energies and per-atom virials."""
    # thermo: step pe virial(6) vol
    assert many.thermo[0, 1] == pytest.approx(one.thermo[0, 1], rel=1e-10, abs=0.0)
    assert_close(many.thermo[0, 2:8], one.thermo[0, 2:8], 1e-10, "pressure (virial part)")
    forces, atom_energy, atom_stress = slice(0, 3), 3, slice(4, 10)
    assert len(many.atoms) == len(one.atoms)
    np.testing.assert_allclose(many.atoms[:, forces], one.atoms[:, forces], rtol=0, atol=1e-8, err_msg="forces")
    np.testing.assert_allclose(many.atoms[:, atom_energy], one.atoms[:, atom_energy], rtol=0, atol=1e-10)
    # per-atom virials, in bar·Å^3: scale of one atom's
    assert_close(many.atoms[:, atom_stress], one.atoms[:, atom_stress], 1e-10, "per-atom virials")


def assert_atom_virials_sum_to_the_virial(run: Run, what: str) -> None:
    # stress/atom is minus the per-atom virial in pressure·volume: its sum is -P_virial·V
    pressure_volume = run.thermo[0, 2:8] * run.thermo[0, 8]
    assert_close(-run.atoms[:, 4:10].sum(axis=0), pressure_volume, 1e-10, what)


@pytest.mark.parametrize("kind", KINDS)
def test_every_ranks_device_is_said_once(single_points, kind):
    for ranks in RANKS:
        log = single_points[kind, "bulk", ranks].log
        said = re.findall(r"pair_style nequip: model \S+ runs on (.*)", log)
        assert said == ["rank 0 on cpu" if ranks == 1 else f"ranks 0-{ranks - 1} on cpu"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_each_rank_evaluates_the_edges_of_its_own_atoms(single_points, kind, system):
    """The report's edges per owned atom are the system's edges per atom (work factor 1), and
    no ghost shell is set up."""
    structure, _, _ = SYSTEMS[system]
    atoms = structure()
    edge_index, _ = compute_neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, R_MAX)
    edges_per_atom = edge_index.shape[1] / len(atoms)
    assert "per owned atom" not in single_points[kind, system, 1].log
    for ranks in RANKS[1:]:
        log = single_points[kind, system, ranks].log
        assert "communication cutoff" not in log
        (report,) = re.findall(rf"pair_style nequip: on {ranks} ranks the model evaluated .*", log)
        atoms_factor, edges = re.match(r".* evaluated (\S+) atoms and (\S+) edges per owned atom", report).groups()
        assert report.endswith("(edges of owned atoms only, node features exchanged after every layer)")
        assert float(edges) == pytest.approx(edges_per_atom, abs=0.05)
        # the ghosts are nodes too (no edges of their own): one cutoff and the skin deep
        assert 1.0 < float(atoms_factor) < 20.0


def per_rank_counts(log: str, name: str) -> Tuple[float, float, float]:
    """LAMMPS' end-of-run statistics of ``name`` (Nlocal, Nghost) over the ranks: ave, max, min."""
    average, high, low = re.search(rf"^{name}:\s+(\S+) ave\s+(\S+) max\s+(\S+) min", log, re.MULTILINE).groups()
    return float(average), float(high), float(low)


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_without_atoms_take_their_part(single_points, kind):
    """The cluster leaves ranks empty, as LAMMPS split it: on 2 ranks the upper one owns no atom,
    only ghosts; on 4 only the first two own atoms, and a rank has no ghosts either (its part in
    each exchange is empty). Their results are still the one rank's
    (test_ranks_give_the_one_rank_results)."""
    owners = {ranks: set(single_points[kind, "empty_ranks", ranks].atoms[:, 10].astype(int)) for ranks in RANKS}
    assert owners == {1: {0}, 2: {0}, 4: {0, 1}}
    # 2 ranks: the ghosts, none of rank 0 (rank 1 owns nothing to send it), are rank 1's
    _, most, fewest = per_rank_counts(single_points[kind, "empty_ranks", 2].log, "Nghost")
    assert most > 0 and fewest == 0
    # 4 ranks: ranks 0 and 1 hold ghosts of each other's atoms, so the rank without ghosts is
    # one of the two that own nothing
    assert per_rank_counts(single_points[kind, "empty_ranks", 4].log, "Nghost")[2] == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("ranks", RANKS)
def test_per_atom_virials_sum_to_the_global_virial(single_points, kind, system, ranks):
    assert_atom_virials_sum_to_the_virial(single_points[kind, system, ranks], f"{ranks} ranks")


@pytest.mark.parametrize("kind", KINDS)
def test_one_rank_matches_the_ase_calculator(single_points, compiled_models, files, kind):
    """The chain's anchor: LAMMPS on one rank is the ASE calculator (for the .pt2, on the file of
    the ase target compiled from the same model)."""
    atoms = bulk_sic()
    reference = compiled_models["float64", "aotinductor", "ase"] if kind == "pt2" else files[kind]
    atoms.calc = reference_calculator(reference)
    run = single_points[kind, "bulk", 1]
    assert run.thermo[0, 1] == pytest.approx(atoms.get_potential_energy(), rel=1e-10, abs=0.0)
    np.testing.assert_allclose(run.atoms[:, 0:3], atoms.get_forces(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ranks", (1, 2))
def test_results_equal_the_eager_model(files, eager_models, tmp_path, kind, ranks):
    """Energy, forces, per-atom virials (stress/atom = -NKTV2P x atom_virial: each edge's
    virial split half to each end) and virial of LAMMPS are the eager model's, on one rank
    (ghosts folded) and two (ghost halves sent to their owners)."""
    atoms = small_sic()
    run = lammps(tmp_path, ranks, write_data(atoms, tmp_path / "small.data"), files[kind], SINGLE_POINT)
    out = eager_models[kind](from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX))
    atom_virial, virial = out["atom_virial"].detach().numpy(), out["virial"].detach().numpy().reshape(3, 3)
    lammps_order = (0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)
    assert run.thermo[0, 1] == pytest.approx(float(out["total_energy"]), rel=1e-10, abs=0.0)
    np.testing.assert_allclose(run.atoms[:, 0:3], out["forces"].detach().numpy(), rtol=0, atol=1e-8)
    expected = np.stack([atom_virial[:, a, b] for a, b in lammps_order], axis=1)
    assert_close(-run.atoms[:, 4:10] / NKTV2P, expected, 1e-10, "per-atom virials")
    assert_close(run.thermo[0, 2:8] * run.thermo[0, 8] / NKTV2P, [virial[a, b] for a, b in lammps_order], 1e-10, "virial")


def test_float32_per_edge_type_cutoffs(compiled_models, tmp_path):
    """The float32 domain file (Si-Si 4.0, Si-C 3.5, C-C 3.0 Å): each pair's cutoff, exchanged
    float32 features; float32 agreement."""
    model = compiled_models["float32", "aotinductor", "pair_nequip_domain"]
    data = write_data(bulk_sic(), tmp_path / "bulk.data")
    one, two = (lammps(tmp_path / str(ranks), ranks, data, model, SINGLE_POINT) for ranks in (1, 2))
    assert two.thermo[0, 1] == pytest.approx(one.thermo[0, 1], rel=1e-6)
    np.testing.assert_allclose(two.atoms[:, 0:3], one.atoms[:, 0:3], rtol=0, atol=1e-4)
    assert_close(two.thermo[0, 2:8], one.thermo[0, 2:8], 1e-5, "pressure (virial part)")


# NVE: the .pt2 on 512 atoms (17.4 Å; on 4 ranks, sub-domains of 8.7 Å, not much wider than the
# ghost cutoff), the .pth on 64 (8.7 Å; on 4 ranks, sub-domains narrower than the ghost cutoff)
NVE_SYSTEMS = {"pt2": lambda: small_sic().repeat(2), "pth": small_sic}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_nve_trajectory_is_the_same_on_1_2_and_4_ranks(files, tmp_path, kind):
    data = write_data(NVE_SYSTEMS[kind](), tmp_path / "bulk.data")
    runs = {ranks: lammps(tmp_path / str(ranks), ranks, data, files[kind], NVE) for ranks in RANKS}
    one = runs[1]
    assert len(one.thermo) == NVE_STEPS // NVE_THERMO_EVERY + 1
    # a real trajectory: the atoms moved, and the total energy was conserved
    assert np.abs(one.thermo[:, 1] - one.thermo[0, 1]).max() > 0.1  # eV of potential energy exchanged
    assert np.ptp(one.thermo[:, 3]) < 1e-4 * len(one.atoms)
    for ranks in RANKS[1:]:
        # step pe ke etotal press, every 50 steps
        np.testing.assert_allclose(runs[ranks].thermo, one.thermo, rtol=1e-10, err_msg=f"{ranks} ranks")
        # final positions (Å) and velocities (Å/ps)
        np.testing.assert_allclose(runs[ranks].atoms[:, 0:3], one.atoms[:, 0:3], rtol=0, atol=1e-8)
        np.testing.assert_allclose(runs[ranks].atoms[:, 3:6], one.atoms[:, 3:6], rtol=0, atol=1e-6)


def test_a_user_communication_cutoff_cannot_starve_the_exchange(files, tmp_path):
    """LAMMPS never communicates less than the largest pair cutoff plus the skin, which is all
    the exchange needs: a smaller `comm_modify cutoff` changes nothing."""
    data = write_data(small_sic(), tmp_path / "small.data")
    default = lammps(tmp_path / "default", 2, data, files["pth"], SINGLE_POINT)
    short = lammps(tmp_path / "short", 2, data, files["pth"], "comm_modify cutoff 1.0\n" + SINGLE_POINT)
    assert short.thermo[0, 1] == pytest.approx(default.thermo[0, 1], rel=1e-12, abs=0.0)
    np.testing.assert_allclose(short.atoms[:, :4], default.atoms[:, :4], rtol=0, atol=1e-10)
    assert_close(short.atoms[:, 4:10], default.atoms[:, 4:10], 1e-10, "per-atom virials")


# errors: what only several ranks can get wrong
def test_newton_off_is_refused(domain_file, tmp_path):
    data = write_data(small_sic(), tmp_path / "small.data")
    run = lammps(tmp_path, 2, data, domain_file, SINGLE_POINT, newton="off", check=False)
    assert (
        "ERROR: pair_style nequip on 2 MPI ranks requires 'newton on' (or 'newton on off'): "
        "forces on ghost atoms are sent to their owners" in run.log
    )


CANNOT_EXCHANGE = (
    "ERROR: pair_style nequip on 2 MPI ranks needs a model that runs layer by layer (each rank evaluates "
    "the edges of its own atoms, exchanging node features with the other ranks after every layer); model "
    "{} does not: compile it with this version of nequip, `nequip-compile ... --target pair_nequip_domain` "
    "(.pt2) or `--mode torchscript` (.pth), or run on one MPI rank"
)


def test_file_of_a_one_rank_target_is_refused(compiled_models, tmp_path):
    model = compiled_models["float64", "aotinductor", "pair_nequip"]
    data = write_data(small_sic(), tmp_path / "small.data")
    run = lammps(tmp_path, 2, data, model, SINGLE_POINT, check=False)
    assert CANNOT_EXCHANGE.format(model) in run.log


def test_ghost_shell_files_of_earlier_versions_are_refused(compiled_models, domain_file, tmp_path):
    """A pair_nequip_domain .pt2 without the parts (the ghost-shell kind), a .pth without
    layer_feature_widths: both were made by earlier versions, and must be compiled again."""
    old_pt2 = with_pt2_metadata(domain_file, tmp_path / "old.nequip.pt2", "nequip_aoti_parts", None)
    old_pth = with_pth_metadata(compiled_models["float64", "torchscript", None], tmp_path / "old.nequip.pth",
                                "layer_feature_widths", None)  # fmt: skip
    data = write_data(small_sic(), tmp_path / "small.data")
    for model in (old_pt2, old_pth):
        run = lammps(tmp_path / model.suffix[1:], 2, data, model, SINGLE_POINT, check=False)
        assert CANNOT_EXCHANGE.format(model) in run.log
    # on one rank they still run
    lammps(tmp_path / "one", 1, data, old_pt2, SINGLE_POINT)


def test_several_ranks_need_no_atom_map(domain_file, tmp_path):
    """Only one rank folds ghosts onto their owners by atom ID; several exchange features
    through LAMMPS' communication, which needs no map: the same results without it."""
    data = write_data(small_sic(), tmp_path / "small.data")
    mapped = lammps(tmp_path / "map", 2, data, domain_file, SINGLE_POINT)
    unmapped = lammps(tmp_path / "no_map", 2, data, domain_file, SINGLE_POINT, atom_map=False)
    assert unmapped.thermo[0, 1] == mapped.thermo[0, 1]
    np.testing.assert_array_equal(unmapped.atoms, mapped.atoms)


def test_comm_mode_multi_gives_the_same_results(domain_file, tmp_path):
    data = write_data(small_sic(), tmp_path / "small.data")
    single = lammps(tmp_path / "single", 2, data, domain_file, SINGLE_POINT)
    multi = lammps(tmp_path / "multi", 2, data, domain_file, "neighbor 2.0 multi\ncomm_modify mode multi\n" + SINGLE_POINT)
    assert multi.thermo[0, 1] == pytest.approx(single.thermo[0, 1], rel=1e-12, abs=0.0)
    # forces and per-atom energies; per-atom virials (bar·Å^3) to rounding of their scale
    np.testing.assert_allclose(multi.atoms[:, :4], single.atoms[:, :4], rtol=0, atol=1e-10)
    assert_close(multi.atoms[:, 4:10], single.atoms[:, 4:10], 1e-10, "per-atom virials")


def test_overlapping_atoms_on_one_rank_are_named_by_every_rank(domain_file, tmp_path):
    """Two atoms on top of each other in the second rank's half: their features are NaN from the
    first layer on, and reach the first rank's atoms through the exchange. Each rank's error
    names the cause it checked: the second rank the two atoms, the first the exchange that
    brought the NaN (never the weights). Whichever rank ends the run first, its message is one
    of these."""
    atoms = small_sic()
    # a copy of an atom of the second rank's half (x from 4.36 Å), within r_max of the first's
    index = int(np.argmin(np.where(atoms.positions[:, 0] > 4.9, atoms.positions[:, 0], np.inf)))
    atoms += atoms[index : index + 1]
    data = write_data(atoms, tmp_path / "overlap.data")
    run = lammps(tmp_path, 2, data, domain_file, SINGLE_POINT, processors="processors 2 1 1", check=False, screen=True)
    pair = rf"atoms with IDs ({index + 1} and {len(atoms)}|{len(atoms)} and {index + 1})"
    expected = {
        "1": rf"pair_style nequip: {re.escape(str(domain_file))}: the model gave a non-finite energy or forces \(NaN "
        rf"or infinity\): {pair} are 0 Å apart \(closer than 0\.1 \* r_max = 0\.4 Å\); overlapping atoms are the "
        r"likely cause: check the structure",
        "0": rf"pair_style nequip: {re.escape(str(domain_file))}: the model gave a non-finite energy or forces \(NaN "
        r"or infinity\): node features \(or their gradients\) came in non-finite from the other ranks through the "
        r"per-layer exchange, while this rank's own were finite and none of its atoms overlap \(the closest two "
        r"atoms are \S+ Å apart, not closer than 0\.1 \* r_max = 0\.4 Å\): the cause is on another rank, which "
        r"reports it",
    }
    errors = set(re.findall(r"ERROR on proc (\d+): (.*) \(\S+:\d+\)", run.log))
    assert errors, run.log[-3000:]
    assert "weights may be non-finite" not in run.log
    for rank, message in errors:
        assert re.fullmatch(expected[rank], message), (rank, message)


def test_atoms_too_close_on_the_second_rank_are_named_by_it(domain_file, tmp_path):
    """Two atoms 0.3 Å apart in the second rank's half: its warning (once per run) names them by
    ID, and appears on its screen output."""
    atoms = small_sic()
    index = int(np.argmin(np.where(atoms.positions[:, 0] > 4.9, atoms.positions[:, 0], np.inf)))
    atoms += atoms[index : index + 1]
    atoms.positions[-1, 1] += 0.3
    data = write_data(atoms, tmp_path / "close.data")
    run = lammps(tmp_path, 2, data, domain_file, SINGLE_POINT, processors="processors 2 1 1", screen=True)
    message = (
        f"WARNING: pair_style nequip: {domain_file}: atoms with IDs {{}} are 0.3 Å apart, closer than 0.1 * r_max = "
        "0.4 Å: the model extrapolates there and its energy and forces may be far off; check the structure (this "
        "warning is given once per run)"
    )
    warnings = re.findall(r"(WARNING: pair_style nequip: .*closer than.*) \(\S+:\d+\)", run.log)
    pairs = (f"{index + 1} and {len(atoms)}", f"{len(atoms)} and {index + 1}")
    assert len(warnings) == 1 and warnings[0] in [message.format(pair) for pair in pairs], warnings


def test_a_file_every_rank_refuses_gives_one_message(domain_file, tmp_path):
    """pair_coeff loads the model on every rank; a refusal that every rank shares (a damaged
    file) is one error, not one per rank (a refusal of some ranks only, a GPU index for one,
    would be each such rank's error->one)."""
    from fixtures.edited_files import edited_keeping_the_hash

    model = edited_keeping_the_hash(domain_file, tmp_path / "edited.nequip.pt2", "type_names", "C Si")
    data = write_data(small_sic(), tmp_path / "small.data")
    run = lammps(tmp_path / "run", 2, data, model, SINGLE_POINT, check=False, screen=True)
    message = (
        f"ERROR: pair_style nequip cannot use the model: {model}: the file is damaged or was edited after it was "
        "written (its content does not match the content hash recorded when it was compiled, record "
        "'nequip/content_hash'): compile it again"
    )
    assert "ERROR on proc" not in run.log
    assert {line.rsplit(" (", 1)[0] for line in run.log.splitlines() if line.startswith("ERROR")} == {message}
