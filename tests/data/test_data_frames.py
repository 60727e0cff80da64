import re

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from nequip.data import TypeMapper, batch_frames, from_ase, keys

KCAL_PER_MOL_IN_EV = 0.0433641


def test_frame_has_contract_shapes_and_dtypes(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=0, num_atoms=6)
    frame = from_ase(atoms, si_c_mapper, r_max=4.0)
    num_edges = frame[keys.EDGE_INDEX].shape[1]
    expected = {
        keys.POS: ((6, 3), torch.float64),
        keys.ATOM_TYPES: ((6,), torch.int64),
        keys.EDGE_INDEX: ((2, num_edges), torch.int64),
        keys.CELL: ((1, 3, 3), torch.float64),
        keys.EDGE_CELL_SHIFT: ((num_edges, 3), torch.float64),
        keys.PBC: ((1, 3), torch.bool),
        keys.TOTAL_ENERGY: ((1, 1), torch.float64),
        keys.FORCES: ((6, 3), torch.float64),
        keys.STRESS: ((1, 3, 3), torch.float64),
    }
    assert {key: (tuple(value.shape), value.dtype) for key, value in frame.items()} == expected
    assert num_edges > 0


def test_labels_come_from_calculator_with_voigt_stress(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=1)
    frame = from_ase(atoms, si_c_mapper, r_max=4.0)
    results = atoms.calc.results
    assert frame[keys.TOTAL_ENERGY].item() == results["energy"]
    np.testing.assert_array_equal(frame[keys.FORCES].numpy(), results["forces"])
    full_stress = voigt_6_to_full_3x3_stress(results["stress"])
    np.testing.assert_array_equal(frame[keys.STRESS][0].numpy(), full_stress)
    # ASE Voigt order is xx yy zz yz xz xy
    assert frame[keys.STRESS][0, 1, 2].item() == results["stress"][3]
    assert frame[keys.STRESS][0, 0, 1].item() == results["stress"][5]


def test_labels_come_from_info_and_arrays(make_atoms, si_c_mapper):
    reference = make_atoms(seed=2)
    atoms = reference.copy()  # copies drop the calculator
    stress = voigt_6_to_full_3x3_stress(reference.calc.results["stress"])
    atoms.info.update(total_energy=reference.calc.results["energy"], stress=stress)
    atoms.arrays["forces"] = reference.calc.results["forces"].copy()
    frame, expected = from_ase(atoms, si_c_mapper, 4.0), from_ase(reference, si_c_mapper, 4.0)
    for label in keys.LABEL_KEYS:
        torch.testing.assert_close(frame[label], expected[label], rtol=0, atol=0)


def test_species_map_to_types_in_model_order():
    mapper = TypeMapper(["C", "Si"], species_to_type={"Si": "Si", "Ge": "Si", "C": "C"})
    np.testing.assert_array_equal(mapper(["Ge", "C", "Si"]), [1, 0, 1])
    assert mapper(["C"]).dtype == np.int64


def test_unit_conversion_of_kcal_per_mol_data(aspirin_path):
    atoms = ase.io.read(aspirin_path, index=0)
    frame = from_ase(
        atoms,
        TypeMapper(["C", "H", "O"]),
        4.0,
        energy_units_to_eV=KCAL_PER_MOL_IN_EV,
        labels=(keys.TOTAL_ENERGY, keys.FORCES),
        require_labels=True,
    )
    np.testing.assert_allclose(frame[keys.FORCES].numpy(), atoms.get_forces() * KCAL_PER_MOL_IN_EV)
    # as written in the file's first frame
    energy, first_force = -405681.6, np.array([-38.77897263, -7.44909763, 32.24373245])
    assert frame[keys.TOTAL_ENERGY].item() == pytest.approx(energy * KCAL_PER_MOL_IN_EV, rel=1e-12)
    np.testing.assert_allclose(frame[keys.FORCES][0].numpy(), first_force * KCAL_PER_MOL_IN_EV)
    assert keys.STRESS not in frame


def test_length_unit_conversion_scales_geometry_forces_and_stress(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=4)
    nm_atoms = atoms.copy()
    nm_atoms.set_cell(atoms.cell.array / 10, scale_atoms=True)
    results = atoms.calc.results
    nm_atoms.calc = SinglePointCalculator(
        nm_atoms,
        energy=results["energy"],
        forces=results["forces"] * 10,
        stress=results["stress"] * 1000,
    )
    in_angstrom = from_ase(atoms, si_c_mapper, 4.0)
    from_nm = from_ase(nm_atoms, si_c_mapper, 4.0, length_units_to_A=10.0)
    for key in (keys.POS, keys.CELL, keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(from_nm[key], in_angstrom[key])
    assert from_nm[keys.EDGE_INDEX].shape == in_angstrom[keys.EDGE_INDEX].shape


def test_non_periodic_frame_has_zero_cell_and_shifts(aspirin_path):
    frame = from_ase(ase.io.read(aspirin_path, index=0), TypeMapper(["C", "H", "O"]), 4.0)
    assert not frame[keys.PBC].any()
    assert torch.all(frame[keys.CELL] == 0)
    assert torch.all(frame[keys.EDGE_CELL_SHIFT] == 0)


def test_slab_has_shifts_only_along_periodic_axes(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=5, num_atoms=10, pbc=(True, True, False))
    atoms.cell[2] = 0.0
    frame = from_ase(atoms, si_c_mapper, 4.5)
    shifts = frame[keys.EDGE_CELL_SHIFT]
    assert torch.all(shifts[:, 2] == 0) and torch.any(shifts[:, :2] != 0)
    assert frame[keys.PBC].tolist() == [[True, True, False]]


def test_unknown_species_is_named_with_the_model_types(si_c_mapper):
    message = (
        "unknown species O: the model's types are ['Si', 'C']; "
        "map each species to one of them with species_to_type"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        from_ase(ase.Atoms("SiO", positions=[[0, 0, 0], [1.5, 0, 0]]), si_c_mapper, 4.0)


def test_missing_required_label_is_named(aspirin_path):
    atoms = ase.io.read(aspirin_path, index=0)
    message = "structure C9H8O4 has no stress label; add it to the data"
    with pytest.raises(ValueError, match=re.escape(message)):
        from_ase(atoms, TypeMapper(["C", "H", "O"]), 4.0, require_labels=True)


@pytest.mark.parametrize(
    "label, damage, reason",
    [
        (keys.TOTAL_ENERGY, lambda r: r.update(energy=np.nan), "nan"),
        (keys.FORCES, lambda r: r["forces"].__setitem__((2, 1), np.inf), "inf on atom 2"),
        (keys.STRESS, lambda r: r["stress"].__setitem__(4, -np.inf), "-inf"),
    ],
)
def test_non_finite_labels_are_rejected(make_atoms, si_c_mapper, label, damage, reason):
    atoms = make_atoms(seed=0, num_atoms=4)
    damage(atoms.calc.results)
    message = f"label {label!r} is not finite ({reason}); fix or remove the frame"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        from_ase(atoms, si_c_mapper, 4.0)


def test_nan_positions_are_rejected(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=0, num_atoms=4)
    atoms.positions[2, 1] = np.nan
    formula = atoms.get_chemical_formula()
    message = f"structure {formula} has NaN or infinite positions; fix or remove the frame"
    with pytest.raises(ValueError, match=re.escape(message)):
        from_ase(atoms, si_c_mapper, 4.0)


def test_nan_cell_is_rejected(make_atoms, si_c_mapper):
    atoms = make_atoms(seed=0, num_atoms=4)
    atoms.cell[1, 2] = np.nan
    message = f"structure {atoms.get_chemical_formula()} has a NaN or infinite cell; fix or remove the frame"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        from_ase(atoms, si_c_mapper, 4.0)


def test_empty_structure_is_rejected(si_c_mapper):
    message = "structure has no atoms; remove empty frames from the data"
    with pytest.raises(ValueError, match=re.escape(message)):
        from_ase(ase.Atoms(), si_c_mapper, 4.0)


@pytest.mark.parametrize("third_vector", [[0, 0, 0], [3, 3, 0]])
def test_periodic_axes_without_a_lattice_are_rejected(third_vector, si_c_mapper):
    atoms = ase.Atoms("Si", cell=[[3, 0, 0], [0, 3, 0], third_vector], pbc=True)
    message = (
        "structure Si is periodic along axes [0, 1, 2] but its lattice vectors there are zero "
        "or linearly dependent; fix the cell or turn off pbc along them"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        from_ase(atoms, si_c_mapper, 4.0)


def test_batch_offsets_edges_and_indexes_frames(periodic_frames, si_c_mapper):
    frames = [from_ase(atoms, si_c_mapper, 4.0) for atoms in periodic_frames]
    batch = batch_frames(frames)
    sizes = [len(atoms) for atoms in periodic_frames]
    first_atoms = np.cumsum([0] + sizes[:-1])

    assert batch[keys.NUM_ATOMS].tolist() == sizes and batch[keys.NUM_ATOMS].dtype == torch.int64
    assert batch[keys.BATCH].tolist() == sum(([f] * n for f, n in enumerate(sizes)), [])
    expected_edges = [frame[keys.EDGE_INDEX] + first for frame, first in zip(frames, first_atoms)]
    torch.testing.assert_close(batch[keys.EDGE_INDEX], torch.cat(expected_edges, dim=1))
    center_frame, neighbor_frame = batch[keys.BATCH][batch[keys.EDGE_INDEX]]
    assert torch.equal(center_frame, neighbor_frame)
    assert batch[keys.CELL].shape == (3, 3, 3) and batch[keys.PBC].shape == (3, 3)
    assert batch[keys.TOTAL_ENERGY].shape == (3, 1) and batch[keys.STRESS].shape == (3, 3, 3)
    assert batch[keys.FORCES].shape == (sum(sizes), 3)
    torch.testing.assert_close(batch[keys.POS][first_atoms[1]], frames[1][keys.POS][0])


def test_batch_fills_a_missing_cell_with_zeros(periodic_frames, si_c_mapper):
    periodic = from_ase(periodic_frames[0], si_c_mapper, 4.0, labels=())
    molecule = {key: periodic[key] for key in (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX)}
    batch = batch_frames([periodic, molecule])
    assert torch.all(batch[keys.CELL][1] == 0) and not batch[keys.PBC][1].any()
    torch.testing.assert_close(batch[keys.CELL][0], periodic[keys.CELL][0])
    assert torch.all(batch[keys.EDGE_CELL_SHIFT][periodic[keys.EDGE_INDEX].shape[1]:] == 0)


def test_batch_of_frames_with_different_labels_is_rejected(periodic_frames, si_c_mapper):
    with_stress = from_ase(periodic_frames[0], si_c_mapper, 4.0)
    without_stress = from_ase(
        periodic_frames[1], si_c_mapper, 4.0, labels=(keys.TOTAL_ENERGY, keys.FORCES)
    )
    message = (
        f"frame 1 has keys {sorted(without_stress)} but frame 0 has {sorted(with_stress)}; "
        "give every frame the same labels"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        batch_frames([with_stress, without_stress])
