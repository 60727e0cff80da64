import re
import warnings

import ase
import ase.io
import numpy as np
import pytest
from ase.build import bulk, fcc111, graphene
from ase.neighborlist import primitive_neighbor_list

from nequip.data import DenseCellWarning, compute_neighbor_list, keys, neighbors, synthetic_frame


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


UNITS_ADVICE = (
    "check the cell's units (Å; not nm, not units of the lattice constant, not fractional "
    "coordinates read as Å) and that it is the cell of these positions"
)


def cu_cell(scale: float):
    """The 4-atom cubic fcc cell (a = 3.7 Å) with its cell and positions scaled by ``scale``."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return atoms


@pytest.mark.parametrize(
    "scale, cell_text, density_text, neighbors_text",
    [
        (
            0.01,
            "cell lengths 0.037, 0.037, 0.037 Å (volume 5.07e-05 Å³)",
            "7.9e+04 atoms/Å³, atoms 0.023 Å apart on average",
            "3e+07 neighbors per atom, 1.2e+08 edges",
        ),
        (
            1e-6,
            "cell lengths 3.7e-06, 3.7e-06, 3.7e-06 Å (volume 5.07e-17 Å³)",
            "7.9e+16 atoms/Å³, atoms 2.3e-06 Å apart on average",
            "3e+19 neighbors per atom, 1.2e+20 edges",
        ),
    ],
)
def test_cell_far_too_small_is_refused_before_the_list_is_built(
    scale, cell_text, density_text, neighbors_text, monkeypatch
):
    def no_list(**kwargs):
        raise AssertionError("the neighbor list was started")

    monkeypatch.setattr(neighbors.vesin, "NeighborList", no_list)
    atoms = cu_cell(scale)
    with pytest.raises(ValueError) as error:
        compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.5)
    assert str(error.value) == (
        f"the periodic cell is far too small for its 4 atoms: {cell_text} give {density_text} "
        "(no real structure exceeds 1000 atoms/Å³, 0.1 Å apart); with r_max = 4.5 Å the neighbor "
        f"list would hold about {neighbors_text}: {UNITS_ADVICE}"
    )


def test_cell_ten_times_too_small_warns_once_and_still_gives_its_list():
    atoms = cu_cell(0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per message and place
        for _ in range(2):
            edge_index, _ = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.5)
    assert [str(warning.message) for warning in caught] == [
        "the periodic cell looks too small for its 4 atoms: cell lengths 0.37, 0.37, 0.37 Å "
        "(volume 0.0507 Å³) give 79 atoms/Å³, atoms 0.23 Å apart on average, denser than any solid "
        "(diamond: 0.18 atoms/Å³, 1.8 Å apart); with r_max = 4.5 Å each atom has about 3e+04 "
        f"neighbors: {UNITS_ADVICE}"
    ]
    assert caught[0].category is DenseCellWarning and caught[0].filename == __file__
    # the estimate the message gives is the list's size: 4 atoms × 3.0e4 neighbors
    assert 1.1e5 < edge_index.shape[1] < 1.3e5


def test_slab_cell_in_nm_warns_with_its_layer():
    atoms = graphene(a=0.246, vacuum=None)  # graphene's 2.46 Å written in nm
    with pytest.warns(UserWarning) as caught:
        compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.5)
    assert [str(warning.message) for warning in caught] == [
        "the periodic cell looks too small for its 2 atoms: cell lengths 0.246, 0.246 Å along the "
        "periodic axes x, y (0.0524 Å² in a layer counted 6 Å thick: the atoms' extent, at least "
        "4/3 r_max) give 6.36 atoms/Å³, atoms 0.54 Å apart on average, denser than any solid "
        "(diamond: 0.18 atoms/Å³, 1.8 Å apart); with r_max = 4.5 Å each atom has about 2.4e+03 "
        f"neighbors: {UNITS_ADVICE}"
    ]


def real_structures(aspirin_path, make_atoms):
    """Real structures at their sizes: the densest solids, cells smaller than the cutoff, layers, chains."""
    aspirin = ase.io.read(aspirin_path, index=0)
    aspirin_in_box = aspirin.copy()
    aspirin_in_box.set_cell([10.0, 10.0, 10.0])
    aspirin_in_box.pbc = True
    chain = ase.Atoms("C", positions=[[0.0, 0.0, 0.0]], cell=[1.28, 0.0, 0.0], pbc=(True, False, False))
    structures = {
        "aspirin": aspirin,
        "aspirin in a periodic box": aspirin_in_box,
        "diamond, the densest solid": bulk("C", "diamond", a=3.567),
        "beryllium": bulk("Be"),
        "osmium": bulk("Os"),
        "1-atom fcc Cu cell": bulk("Cu", "fcc", a=3.61),
        "1-atom bcc Li cell": bulk("Li", "bcc", a=3.51),
        "graphene": graphene(a=2.46, vacuum=None),
        "Cu(111) slab in vacuum": fcc111("Cu", size=(1, 1, 5), vacuum=8.0),
        "carbyne chain": chain,
    }
    for seed in range(10):
        structures[f"test fixture {seed}"] = make_atoms(seed, num_atoms=12)
        structures[f"test fixture slab {seed}"] = make_atoms(seed, pbc=(True, True, False))
    return structures


@pytest.mark.parametrize("r_max", [3.5, 6.0])
def test_real_structures_give_no_density_warning(r_max, aspirin_path, make_atoms):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, atoms in real_structures(aspirin_path, make_atoms).items():
            edge_index, _ = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r_max)
            assert edge_index.shape[1] > 0, name


def test_frame_in_units_of_a_small_r_max_gives_no_density_warning():
    # AOTInductor traces on the synthetic frame of r_max = 1 Å: 4.6 atoms/Å³, but 19 neighbors each
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = synthetic_frame(["A", "B"], r_max=1.0)
    assert frame[keys.EDGE_INDEX].shape[1] > 0
