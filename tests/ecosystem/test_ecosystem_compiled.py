"""Packages of the other NequIP release compiled by our nequip-compile: the .nequip.pth and every
.nequip.pt2 target run on our C++ runtime, in ASE and in LAMMPS (one rank, and two ranks with the
layer-by-layer exchange of a pair_nequip_domain file), giving that release's own predictions."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import write

from fixtures.foreign_packages import FOREIGN_COMPILED, FRAME_NAMES, TOLERANCE, relative_error
from nequip.ase import NequIPCalculator
from nequip.data import TypeMapper, from_ase
from nequip.inference import OpenedModel, open_model
from nequip.load import load_model

BIN = Path(sys.executable).parent


def frame_of(compiled: OpenedModel, atoms):
    cutoffs = None if compiled.per_edge_type_cutoff is None else np.asarray(compiled.per_edge_type_cutoff)
    return from_ase(atoms, TypeMapper(list(compiled.type_names)), compiled.r_max, per_edge_type_cutoff=cutoffs, labels=())


def key_id(key):
    dtype, target = key
    return f"{dtype}-{target or 'torchscript'}"


@pytest.mark.slow  # compiles files (minutes)
@pytest.mark.parametrize("key", FOREIGN_COMPILED, ids=key_id)
def test_compiled_file_gives_their_predictions(foreign, key):
    dtype, target = key
    compiled = open_model(foreign.compiled(dtype, target))
    for name in FRAME_NAMES:
        expected = foreign.frame(dtype, name)
        out = compiled(frame_of(compiled, expected.atoms))
        tolerance = TOLERANCE[dtype]
        assert relative_error(out["atomic_energy"].numpy().ravel(), expected.atomic_energy) < tolerance, name
        assert relative_error(out["forces"].numpy(), expected.forces) < tolerance, name
        if "total_energy" in out:
            assert relative_error(out["total_energy"].item(), expected.total_energy) < tolerance, name
        if "virial" in out:
            assert relative_error(out["virial"].numpy()[0], expected.virial) < tolerance, name
        if expected.stress is not None and "stress" in out:
            assert relative_error(out["stress"].numpy()[0], expected.stress) < tolerance, name


@pytest.mark.parametrize("key", FOREIGN_COMPILED, ids=key_id)
def test_compiled_file_states_our_metadata_and_where_the_model_came_from(foreign, key):
    dtype, target = key
    metadata = open_model(foreign.compiled(dtype, target)).metadata
    expected = load_model(foreign.package(dtype)).metadata()
    assert metadata["model_made_by"] == "nequip 0.19.1"
    for name in ("model_dtype", "type_names", "num_types", "r_max", "allow_tf32", "num_layers"):
        assert metadata[name] == expected[name]
    assert metadata.get("per_edge_type_cutoff") == expected.get("per_edge_type_cutoff")
    # a .pth of theirs runs whole (without the key the runtime runs no layer-by-layer exchange);
    # the parts are in the pair_nequip_domain file
    assert ("layer_feature_widths" in metadata) == (target is not None)
    assert ("nequip_aoti_parts" in metadata) == (target == "pair_nequip_domain")
    if target is not None:
        assert metadata["compile_target"] == target


def test_domain_file_layer_by_layer_gives_their_predictions(foreign):
    """The parts LAMMPS runs on several ranks, periodic images as ghosts."""
    compiled = open_model(foreign.compiled("float64", "pair_nequip_domain"))
    for name in ("bulk", "triclinic", "lammps"):
        expected = foreign.frame("float64", name)
        out = compiled.call_exchanging(frame_of(compiled, expected.atoms))
        assert relative_error(out["atomic_energy"].numpy().ravel(), expected.atomic_energy) < 1e-6, name
        assert relative_error(out["forces"].numpy(), expected.forces) < 1e-6, name
        assert relative_error(out["virial"].numpy()[0], expected.virial) < 1e-6, name


@pytest.mark.parametrize("target", ("ase", "pair_nequip"))
def test_ase_calculator_on_the_compiled_file_gives_their_predictions(foreign, target):
    calculator = NequIPCalculator(foreign.compiled("float64", target))
    for name in ("bulk", "triclinic", "cluster"):
        expected = foreign.frame("float64", name)
        atoms = expected.atoms.copy()
        atoms.calc = calculator
        assert relative_error(atoms.get_potential_energy(), expected.total_energy) < 1e-6
        assert relative_error(atoms.get_forces(), expected.forces) < 1e-6
        if expected.stress is not None:
            assert relative_error(atoms.get_stress(voigt=False), expected.stress) < 1e-6


# --- LAMMPS ----------------------------------------------------------------------------------

LAMMPS_INPUT = """
units metal
atom_style atomic
atom_modify map yes
newton on
boundary p p p
read_data {data}
pair_style nequip
pair_coeff * * {model} Cu Au
compute atom_energy all pe/atom
thermo_style custom step pe press
thermo_modify format float %.17g
dump atoms all custom 1 atoms.dump id fx fy fz c_atom_energy
dump_modify atoms sort id format float %.17g
run 0
"""


def run_lammps(directory: Path, ranks: int, data: Path, model: Path):
    """``mpirun -np ranks lmp`` of LAMMPS_INPUT: (potential energy, per-atom rows by atom ID:
    fx fy fz energy)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "in.lammps").write_text(LAMMPS_INPUT.format(data=data, model=model))
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // ranks)))
    result = subprocess.run(
        [str(BIN / "mpirun"), "-np", str(ranks), str(BIN / "lmp"), "-in", "in.lammps", "-log", "log.lammps",
         "-screen", "none", "-nocite"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = (directory / "log.lammps").read_text() if (directory / "log.lammps").exists() else ""
    assert result.returncode == 0, f"{ranks} ranks failed:\n{log[-3000:]}\n{result.stderr}"
    lines = log.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    energy = float(lines[header + 1].split()[1])
    return energy, np.loadtxt(directory / "atoms.dump", skiprows=9)[:, 1:]


@pytest.fixture(scope="module")
def lammps_runs(foreign, tmp_path_factory):
    """The 108-atom frame on 1 and 2 ranks with the domain file of their float64 model."""
    directory = tmp_path_factory.mktemp("lammps_foreign")
    expected = foreign.frame("float64", "lammps")
    data = directory / "cuau.data"
    write(data, expected.atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True)
    model = foreign.compiled("float64", "pair_nequip_domain")
    return expected, {ranks: run_lammps(directory / str(ranks), ranks, data, model) for ranks in (1, 2)}


def test_lammps_on_one_rank_gives_their_predictions(lammps_runs):
    expected, runs = lammps_runs
    energy, atoms = runs[1]
    assert relative_error(energy, expected.total_energy) < 1e-6
    assert relative_error(atoms[:, 0:3], expected.forces) < 1e-6
    assert relative_error(atoms[:, 3], expected.atomic_energy) < 1e-6


def test_lammps_on_two_ranks_equals_one_rank(lammps_runs):
    _, runs = lammps_runs
    (one_energy, one), (two_energy, two) = runs[1], runs[2]
    assert two_energy == pytest.approx(one_energy, rel=1e-10, abs=0.0)
    np.testing.assert_allclose(two[:, 0:3], one[:, 0:3], rtol=0, atol=1e-10)
    np.testing.assert_allclose(two[:, 3], one[:, 3], rtol=0, atol=1e-10)
