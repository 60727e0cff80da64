"""pair_style nequip with a committee file (one MPI rank): dynamics driven by the committee mean,
and `deviation FILE every N` writing DeePMD-kit's model_devi.out columns, equal to those of
the committee's models evaluated one by one."""

import numpy as np
import pytest
from ase.build import bulk

from lammps_harness import lammps_frame, new_lammps, results, run_lmp, setup
from nequip.data import TypeMapper, from_ase, keys


def sic_supercell():
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.1, seed=7)
    return lammps_frame(atoms)


def members_one_by_one(members, atoms):
    """Forces (K, N, 3) and virials (K, 3, 3) of each model on ``atoms``, in eV/Å and eV."""
    frame = from_ase(atoms, TypeMapper(["Si", "C"]), 4.0)
    outs = [member(dict(frame)) for member in members]
    forces = np.stack([out[keys.FORCES].detach().numpy() for out in outs])
    virials = np.stack([out[keys.VIRIAL].detach().numpy().reshape(3, 3) for out in outs])
    return forces, virials


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
    force_deviation = np.linalg.norm(np.std(forces, axis=0), axis=-1)
    virial_deviation = np.std(virials, axis=0).reshape(-1) / len(atoms)
    assert force_deviation.max() > 1e-3  # the models differ
    expected = [
        0,
        virial_deviation.max(),
        virial_deviation.min(),
        np.linalg.norm(virial_deviation) / 3,
        force_deviation.max(),
        force_deviation.min(),
        force_deviation.mean(),
    ]
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
        "b.nequip.zip ... committee.nequip.pth)"
    ) in completed.stdout + completed.stderr
    assert not (tmp_path / "model_devi.out").exists()


def test_every_without_deviation_is_refused(tmp_path):
    completed = run_lmp("pair_style nequip every 10\n", tmp_path)
    assert completed.returncode != 0
    assert (
        "Illegal pair_style nequip command: 'every' is how often the deviation file is written: "
        "give 'deviation FILE' too"
    ) in completed.stdout + completed.stderr
