"""The runtime converts inputs itself: compiled AOTI models check nothing (FILE_CONTRACT §4),
so int32 indices, float32 positions and non-contiguous arrays must give the results of
contiguous float64/int64 inputs. nequip._runtime hands arrays to C++ as they are (dtype and
strides kept), so these tests exercise the C++ conversion."""

import numpy as np
import pytest
from ase.build import bulk

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip._runtime import Model
from nequip.data import TypeMapper, compute_neighbor_list
from runtime_cases import compute, random_frames

FILES = {
    "pth": ("float64", "torchscript", None),
    "pt2": ("float64", "aotinductor", "pair_nequip"),
}


@pytest.fixture(params=sorted(FILES), scope="module")
def model(request, compiled_models):
    return Model(str(compiled_models[FILES[request.param]]))


@pytest.fixture(scope="module")
def frame():
    """Rattled, sheared 3C-SiC (8 atoms, periodic)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.4, 0, 0], [0, -0.3, 0]], scale_atoms=True)
    atoms.rattle(0.1, seed=2)
    atom_types = TypeMapper(list(TYPE_NAMES))(atoms.get_chemical_symbols())
    edge_index, edge_cell_shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, R_MAX)
    return dict(
        pos=atoms.positions, atom_types=atom_types, edge_index=edge_index, edge_cell_shift=edge_cell_shift,
        cell=atoms.cell.array,
    )


def assert_same_outputs(got, expected):
    """Equal up to rounding: a TorchScript model's first (profiling) run rounds differently
    from later runs; a mishandled dtype or stride would be wrong by far more."""
    assert got.keys() == expected.keys()
    for name in expected:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-13 * scale, err_msg=name)


def test_int32_indices_give_the_int64_results(model, frame):
    expected = compute(model, frame)
    got = model.compute(
        frame["pos"], frame["atom_types"].astype(np.int32), frame["edge_index"].astype(np.int32),
        frame["edge_cell_shift"], frame["cell"],
    )
    assert_same_outputs(got, expected)


def test_float32_inputs_give_the_results_of_their_float64_values(model, frame):
    pos32, cell32 = frame["pos"].astype(np.float32), frame["cell"].astype(np.float32)
    shift32 = frame["edge_cell_shift"].astype(np.float32)
    expected = model.compute(
        pos32.astype(np.float64), frame["atom_types"], frame["edge_index"], shift32.astype(np.float64),
        cell32.astype(np.float64),
    )
    got = model.compute(pos32, frame["atom_types"], frame["edge_index"], shift32, cell32)
    assert_same_outputs(got, expected)


def test_non_contiguous_inputs_give_the_contiguous_results(model, frame):
    expected = compute(model, frame)
    num_edges = frame["edge_index"].shape[1]
    pos = np.asfortranarray(frame["pos"])
    atom_types = np.repeat(frame["atom_types"], 2)[::2]  # stride 2
    edge_index = np.ascontiguousarray(frame["edge_index"].T).T  # transposed view
    wide_shift = np.zeros((num_edges, 6))
    wide_shift[:, ::2] = frame["edge_cell_shift"]
    edge_cell_shift = wide_shift[:, ::2]
    cell = frame["cell"][::-1].copy()[::-1]  # negative strides
    for array in (pos, atom_types, edge_index, edge_cell_shift):
        assert not array.flags.c_contiguous
    assert cell.strides[0] < 0
    got = model.compute(pos, atom_types, edge_index, edge_cell_shift, cell)
    assert_same_outputs(got, expected)


def test_periodic_inputs_may_be_omitted_for_a_molecule(model):
    molecule = next(f for f in random_frames(20, seed=3)[2:] if not f["pbc"].any() and f["edge_index"].shape[1] > 0)
    got = model.compute(molecule["pos"], molecule["atom_types"], molecule["edge_index"])
    # omitted cell = zero cell: no volume, hence no stress
    assert_same_outputs(got, compute(model, dict(molecule, cell=np.zeros((3, 3)))))


def test_cell_with_a_frame_dimension_is_accepted(model, frame):
    got = model.compute(
        frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"][None]
    )
    assert_same_outputs(got, compute(model, frame))
