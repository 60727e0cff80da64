import re

import ase.io
import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list

from nequip.data import compute_neighbor_list


def edge_set(edge_index, edge_cell_shift):
    """The edges as a set of (i, j, shift) triples."""
    shifts = map(tuple, np.rint(edge_cell_shift).astype(int).tolist())
    return set(zip(edge_index[0].tolist(), edge_index[1].tolist(), shifts))


def ase_edge_set(pos, cell, pbc, r_max):
    i, j, shift = primitive_neighbor_list("ijS", pbc, cell, pos, r_max, self_interaction=False)
    return set(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))


def assert_matches_ase(pos, cell, pbc, r_max):
    edge_index, edge_cell_shift = compute_neighbor_list(pos, cell, pbc, r_max)
    assert edge_index.dtype == np.int64 and edge_index.shape[0] == 2
    assert edge_cell_shift.dtype == np.float64 and edge_cell_shift.shape == (edge_index.shape[1], 3)
    edges = edge_set(edge_index, edge_cell_shift)
    assert len(edges) == edge_index.shape[1], "duplicate edges"
    assert edges == ase_edge_set(pos, cell, pbc, r_max)
    return edges


@pytest.mark.parametrize("seed", range(4))
def test_matches_ase_on_random_triclinic_cells(seed, make_atoms):
    atoms = make_atoms(seed, num_atoms=12)
    edges = assert_matches_ase(atoms.positions, atoms.cell.array, atoms.pbc, r_max=4.0)
    assert len(edges) > 0


def test_cell_smaller_than_cutoff_gives_all_images(make_atoms):
    atoms = make_atoms(seed=7, num_atoms=2)
    atoms.set_cell(atoms.cell.array / 2.5, scale_atoms=True)
    edges = assert_matches_ase(atoms.positions, atoms.cell.array, atoms.pbc, r_max=5.0)
    # every atom sees many images of itself
    assert sum(i == j for i, j, _ in edges) > 20


@pytest.mark.parametrize("third_vector", [(0.0, 0.0, 0.0), (0.3, -0.2, 7.0)])
def test_slab_periodic_in_two_directions_matches_ase(third_vector, make_atoms):
    atoms = make_atoms(seed=3, num_atoms=10, pbc=(True, True, False))
    cell = atoms.cell.array.copy()
    cell[2] = third_vector
    edges = assert_matches_ase(atoms.positions, cell, atoms.pbc, r_max=4.5)
    assert all(shift[2] == 0 for _, _, shift in edges)
    assert any(shift[0] != 0 for _, _, shift in edges)


def test_non_periodic_molecule_matches_ase(aspirin_path):
    atoms = ase.io.read(aspirin_path, index=0)
    edges = assert_matches_ase(atoms.positions, atoms.cell.array, atoms.pbc, r_max=4.0)
    assert all(i != j and shift == (0, 0, 0) for i, j, shift in edges)


def test_per_edge_type_cutoff_equals_distance_filter(make_atoms):
    atoms = make_atoms(seed=11, num_atoms=16)
    pos, cell = atoms.positions, atoms.cell.array
    atom_types = (atoms.numbers == 6).astype(np.int64)
    cutoff = np.array([[4.0, 3.0], [3.0, 2.5]])
    edge_index, edge_cell_shift = compute_neighbor_list(
        pos, cell, atoms.pbc, 4.0, atom_types=atom_types, per_edge_type_cutoff=cutoff
    )

    i, j, shift = primitive_neighbor_list("ijS", atoms.pbc, cell, pos, 4.0, self_interaction=False)
    distance = np.linalg.norm(pos[j] - pos[i] + shift @ cell, axis=1)
    keep = distance < cutoff[atom_types[i], atom_types[j]]
    expected = set(zip(i[keep].tolist(), j[keep].tolist(), map(tuple, shift[keep].tolist())))
    assert 0 < len(expected) < len(i)
    assert edge_set(edge_index, edge_cell_shift) == expected


def test_per_edge_type_cutoff_above_r_max_is_rejected(make_atoms):
    atoms = make_atoms(seed=0)
    message = (
        "per_edge_type_cutoff has a cutoff of 5.0 above r_max = 4.0; "
        "raise r_max or lower the cutoff"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_neighbor_list(
            atoms.positions,
            atoms.cell.array,
            atoms.pbc,
            4.0,
            atom_types=np.zeros(len(atoms), dtype=np.int64),
            per_edge_type_cutoff=np.full((1, 1), 5.0),
        )


def test_per_edge_type_cutoff_without_atom_types_is_rejected(make_atoms):
    atoms = make_atoms(seed=0)
    message = "per_edge_type_cutoff needs atom_types; pass the atoms' type indices"
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_neighbor_list(
            atoms.positions,
            atoms.cell.array,
            atoms.pbc,
            4.0,
            per_edge_type_cutoff=np.full((2, 2), 3.0),
        )


def test_periodic_axes_without_volume_are_refused_with_the_way_out():
    pos = np.zeros((2, 3))
    pos[1, 0] = 1.0
    cell = np.diag([4.0, 4.0, 0.0])
    with pytest.raises(ValueError) as error:
        compute_neighbor_list(pos, cell, [True, True, True], 3.0)
    assert str(error.value) == (
        "the cell has no volume along its periodic axes (x, y, z; cell [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], "
        "[0.0, 0.0, 0.0]]): give the cell vectors of the periodic axes, or make those axes non-periodic "
        "(pbc=False for a molecule)"
    )
    # the same cell is fine for a slab periodic along x and y only
    edge_index, _ = compute_neighbor_list(pos, cell, [True, True, False], 3.0)
    assert edge_index.shape[1] > 0
