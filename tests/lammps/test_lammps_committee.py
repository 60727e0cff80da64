"""pair_style nequip with a committee file: dynamics driven by the committee mean, `deviation
FILE every N` writing DeePMD-kit's model_devi.out columns, `compute pair nequip` giving the max
force, energy and max virial deviations (what `fix halt` reads) and `fix pair` the per-atom
force deviation, all equal to those of the committee's models evaluated one by one, on 1, 2 and
4 MPI ranks (the members layer by layer, each with its own feature exchange)."""

import numpy as np
import pytest
from ase.build import bulk

from lammps_harness import lammps_frame, new_lammps, results, run_lmp, setup
from nequip.data import TypeMapper, from_ase, keys
from test_lammps_multirank import assert_close, lammps, small_sic, write_data


def sic_supercell():
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.1, seed=7)
    return lammps_frame(atoms)


def members_one_by_one(members, atoms, energies=False):
    """Forces (K, N, 3) and virials (K, 3, 3) of each model on ``atoms``, in eV/Å and eV (and
    with ``energies`` their total energies (K,), eV)."""
    frame = from_ase(atoms, TypeMapper(["Si", "C"]), 4.0)
    outs = [member(dict(frame)) for member in members]
    forces = np.stack([out[keys.FORCES].detach().numpy() for out in outs])
    virials = np.stack([out[keys.VIRIAL].detach().numpy().reshape(3, 3) for out in outs])
    if energies:
        return forces, virials, np.array([float(out[keys.TOTAL_ENERGY]) for out in outs])
    return forces, virials


def model_devi_row(step, forces, virials, num_atoms):
    """DeePMD-kit's model_devi.out columns from the members' forces (K, N, 3) and virials (K, 3, 3)."""
    force_deviation = np.linalg.norm(np.std(forces, axis=0), axis=-1)
    virial_deviation = np.std(virials, axis=0).reshape(-1) / num_atoms
    return [
        step,
        virial_deviation.max(),
        virial_deviation.min(),
        np.linalg.norm(virial_deviation) / 3,
        force_deviation.max(),
        force_deviation.min(),
        force_deviation.mean(),
    ]


def read_model_devi(path):
    lines = path.read_text().splitlines()
    assert lines[0].split() == [
        "#",
        "step",
        "max_devi_v",
        "min_devi_v",
        "avg_devi_v",
        "max_devi_f",
        "min_devi_f",
        "avg_devi_f",
    ]
    return np.array([[float(word) for word in line.split()] for line in lines[1:]])


def test_committee_drives_lammps_with_its_mean_and_writes_deepmd_deviations(committee_files, tmp_path):
    atoms = sic_supercell()
    path = committee_files["torchscript", None, "mean"]
    deviation_file = tmp_path / "model_devi.out"
    lmp = new_lammps()
    setup(lmp, atoms, [f"pair_style nequip deviation {deviation_file} every 2", f"pair_coeff * * {path} Si C"])
    got = results(lmp)  # run 0: step 0

    forces, virials = members_one_by_one(committee_files.members, atoms)
    np.testing.assert_allclose(got.forces, forces.mean(axis=0), rtol=1e-8, atol=1e-10)
    rows = read_model_devi(deviation_file)
    assert rows.shape == (1, 7)
    expected = model_devi_row(0, forces, virials, len(atoms))
    assert expected[4] > 1e-3  # the models differ
    # the file's 7 significant digits
    np.testing.assert_allclose(rows[0], expected, rtol=1e-6, atol=1e-12)

    # a run: steps 2 and 4 (step 0, evaluated again by the run's setup, is written once)
    lmp.commands_list(["velocity all create 300 12 loop geom", "fix nve all nve", "run 4"])
    assert read_model_devi(deviation_file)[:, 0].tolist() == [0, 2, 4]


def test_deviation_of_a_single_model_is_refused(compiled_models, tmp_path):
    path = compiled_models["float64", "torchscript", None]
    script = f"""
units metal
atom_style atomic
atom_modify map yes
lattice diamond 4.36
region box block 0 1 0 1 0 1
create_box 2 box
create_atoms 1 box
mass * 28.0
pair_style nequip deviation {tmp_path / 'model_devi.out'}
pair_coeff * * {path} Si C
run 0
"""
    completed = run_lmp(script, tmp_path)
    assert completed.returncode != 0
    assert (
        f"pair_style nequip deviation {tmp_path / 'model_devi.out'}: model {path} is one model; the deviation is "
        "that of a committee: compile several models into one file (nequip-compile a.nequip.zip "
        "b.nequip.zip ... committee.nequip.pt2)"
    ) in completed.stdout + completed.stderr
    assert not (tmp_path / "model_devi.out").exists()


def test_per_atom_deviation_of_a_single_model_is_refused(compiled_models, tmp_path):
    """fix pair asks a single model's pair style for its force_deviation."""
    path = compiled_models["float64", "torchscript", None]
    script = f"""
units metal
atom_style atomic
atom_modify map yes
lattice diamond 4.36
region box block 0 1 0 1 0 1
create_box 2 box
create_atoms 1 box
mass * 28.0
pair_style nequip
pair_coeff * * {path} Si C
fix atom_deviation all pair 1 nequip force_deviation 0
run 0
"""
    completed = run_lmp(script, tmp_path)
    assert completed.returncode != 0
    assert (
        f"pair_style nequip: force_deviation is the deviation of a committee of models, and model {path} is one "
        "model: compile several models into one file (nequip-compile a.nequip.zip b.nequip.zip ... "
        "committee.nequip.pt2)"
    ) in completed.stdout + completed.stderr


def test_every_without_deviation_is_refused(tmp_path):
    completed = run_lmp("pair_style nequip every 10\n", tmp_path)
    assert completed.returncode != 0
    assert (
        "Illegal pair_style nequip command: 'every' is how often the deviation file is written: "
        "give 'deviation FILE' too"
    ) in completed.stdout + completed.stderr


# -- several MPI ranks ------------------------------------------------------------------------

# run 0 with the deviation file, compute pair's three values in the thermo line, and per atom
# (sorted by ID) the forces and fix pair's force deviation
COMMITTEE_SINGLE_POINT = """
pair_style nequip deviation model_devi.out
pair_coeff * * {model} Si C
compute dev all pair nequip
fix atom_deviation all pair 1 nequip force_deviation 0
thermo_style custom step pe c_dev[1] c_dev[2] c_dev[3]
thermo_modify format float %.17g
dump atoms all custom 1 atoms.dump id fx fy fz f_atom_deviation
dump_modify atoms sort id format float %.17g
run 0
"""


@pytest.fixture(scope="module")
def committee_system(committee_files, tmp_path_factory):
    """(data file, atoms, the members' forces, virials and energies one by one) of 64 atoms."""
    atoms = small_sic()
    data = write_data(atoms, tmp_path_factory.mktemp("committee_data") / "sic.data")
    return data, atoms, members_one_by_one(committee_files.members, atoms, energies=True)


# the committee files that LAMMPS runs (mode, target), and on how many ranks: every file on one
# rank; on several, the files that run layer by layer
COMMITTEE_KINDS = {
    "pth": ("torchscript", None),
    "pt2-pair_nequip": ("aotinductor", "pair_nequip"),
    "pt2-pair_nequip_domain": ("aotinductor", "pair_nequip_domain"),
}
COMMITTEE_RUNS = [("pth", 1), ("pth", 2), ("pth", 4), ("pt2-pair_nequip", 1), ("pt2-pair_nequip_domain", 1),
                  ("pt2-pair_nequip_domain", 2)]  # fmt: skip


@pytest.mark.slow  # compiles the committee's pair_nequip and pair_nequip_domain files (minutes)
@pytest.mark.parametrize("kind, ranks", COMMITTEE_RUNS, ids=[f"{kind}-{ranks}" for kind, ranks in COMMITTEE_RUNS])
def test_committee_on_several_ranks_is_its_models_one_by_one(committee_files, committee_system, kind, ranks, tmp_path):
    data, atoms, (forces, virials, energies) = committee_system
    mode, target = COMMITTEE_KINDS[kind]
    model = committee_files[mode, target, "mean"]
    run = lammps(tmp_path, ranks, data, model, COMMITTEE_SINGLE_POINT.format(model=model))

    step, energy, max_force_deviation, energy_deviation, max_virial_deviation = run.thermo[0]
    force_deviation = np.linalg.norm(np.std(forces, axis=0), axis=-1)
    assert_close(energy, energies.mean(), 1e-10, "energy")
    assert_close(run.atoms[:, :3], forces.mean(axis=0), 1e-10, "forces")
    assert_close(run.atoms[:, 3], force_deviation, 1e-10, "per-atom force deviation (fix pair)")
    expected = model_devi_row(0, forces, virials, len(atoms))
    assert_close(max_force_deviation, expected[4], 1e-10, "max force deviation (compute pair)")
    assert_close(energy_deviation, np.std(energies), 1e-10, "energy deviation (compute pair)")
    assert_close(max_virial_deviation, expected[1], 1e-10, "max virial deviation (compute pair)")
    np.testing.assert_allclose(read_model_devi(tmp_path / "model_devi.out")[0], expected, rtol=1e-6, atol=1e-12)
    if ranks > 1:
        assert f"on {ranks} ranks the model evaluated" in run.log  # layer by layer


def test_fix_halt_stops_a_run_on_the_max_force_deviation(committee_files):
    atoms = sic_supercell()
    path = committee_files["torchscript", None, "mean"]
    forces, _ = members_one_by_one(committee_files.members, atoms)
    initial = np.linalg.norm(np.std(forces, axis=0), axis=-1).max()
    lmp = new_lammps()
    setup(lmp, atoms, ["pair_style nequip", f"pair_coeff * * {path} Si C"])
    lmp.commands_list(
        [
            "compute dev all pair nequip",
            "variable max_deviation equal c_dev[1]",
            "velocity all create 300 12 loop geom",
            "fix nve all nve",
            f"fix stop all halt 1 v_max_deviation > {initial * 100:.17g} error soft",
            "run 3",
        ]
    )
    assert lmp.extract_global("ntimestep") == 3  # below the bound: the whole run
    lmp.command("unfix stop")
    lmp.command(f"fix stop all halt 1 v_max_deviation > {initial / 2:.17g} error soft")
    lmp.command("run 10")
    assert lmp.extract_global("ntimestep") == 4  # above it: stopped at the first check
