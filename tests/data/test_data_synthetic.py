"""The synthetic frame: the stand-in frame of packages, the compiler's check and AOTInductor tracing."""

import numpy as np
import torch

from nequip.compile.aotinductor import tracing_inputs
from nequip.compile.contract import TARGET_INPUTS
from nequip.data import keys, synthetic_frame


def edge_lengths(frame):
    center, neighbor = frame[keys.EDGE_INDEX]
    vectors = frame[keys.POS][neighbor] - frame[keys.POS][center] + frame[keys.EDGE_CELL_SHIFT] @ frame[keys.CELL][0]
    return vectors.norm(dim=1)


def test_synthetic_frame_has_every_type_and_neighbors_within_the_cutoff():
    type_names = ["H", "C", "N"]
    frame = synthetic_frame(type_names, r_max=3.0)
    assert frame[keys.POS].shape == (8, 3) and frame[keys.POS].dtype == torch.float64
    assert frame[keys.ATOM_TYPES].dtype == torch.int64
    assert sorted(set(frame[keys.ATOM_TYPES].tolist())) == [0, 1, 2]
    assert frame[keys.CELL].shape == (1, 3, 3) and frame[keys.CELL].dtype == torch.float64
    assert frame[keys.PBC].tolist() == [[True, True, True]]
    edge_index = frame[keys.EDGE_INDEX]
    assert edge_index.dtype == torch.int64 and frame[keys.EDGE_CELL_SHIFT].shape == (edge_index.shape[1], 3)
    assert sorted(set(edge_index[0].tolist())) == list(range(8)), "an atom without neighbors"
    lengths = edge_lengths(frame)
    assert 0 < lengths.min() and lengths.max() < 3.0
    # periodic: edges cross the cell boundary
    assert bool(frame[keys.EDGE_CELL_SHIFT].abs().sum(1).gt(0).any())
    again = synthetic_frame(type_names, r_max=3.0)
    assert all(torch.equal(frame[key], again[key]) for key in frame)


def test_synthetic_frame_has_an_atom_of_every_type_beyond_eight_types():
    frame = synthetic_frame([f"T{i}" for i in range(10)], r_max=2.0)
    assert sorted(set(frame[keys.ATOM_TYPES].tolist())) == list(range(10))


def test_synthetic_frame_respects_per_edge_type_cutoffs():
    cutoffs = np.array([[3.0, 2.0], [2.0, 3.0]])
    full = synthetic_frame(["A", "B"], r_max=3.0)
    pruned = synthetic_frame(["A", "B"], r_max=3.0, per_edge_type_cutoff=cutoffs.ravel().tolist())
    assert 0 < pruned[keys.EDGE_INDEX].shape[1] < full[keys.EDGE_INDEX].shape[1]
    types = pruned[keys.ATOM_TYPES][pruned[keys.EDGE_INDEX]]
    assert bool((edge_lengths(pruned) < torch.as_tensor(cutoffs)[types[0], types[1]]).all())


def test_tracing_frame_has_distinct_sizes_of_at_least_two():
    # symbolic tracing specialises sizes 0 and 1: the trace would not hold for other sizes
    inputs = dict(zip(TARGET_INPUTS["pair_nequip_domain"], tracing_inputs("pair_nequip_domain", 1, torch.device("cpu"))))
    num_atoms, num_edges = inputs[keys.POS].shape[0], inputs[keys.EDGE_INDEX].shape[1]
    assert 2 <= num_atoms < num_edges
    assert inputs[keys.LOCAL_MASK].dtype == torch.bool and 0 < int(inputs[keys.LOCAL_MASK].sum()) < num_atoms


def test_export_frame_has_the_requested_sizes_in_the_targets_order():
    for target in ("ase", "pair_nequip", "pair_nequip_domain"):
        inputs = tracing_inputs(target, 2, torch.device("cpu"), num_atoms=512, num_edges=24576)
        assert len(inputs) == len(TARGET_INPUTS[target])
        named = dict(zip(TARGET_INPUTS[target], inputs))
        assert named[keys.POS].shape == (512, 3) and named[keys.POS].dtype == torch.float64
        assert named[keys.ATOM_TYPES].shape == (512,) and set(named[keys.ATOM_TYPES].tolist()) == {0, 1}
        assert named[keys.EDGE_INDEX].shape == (2, 24576) and named[keys.EDGE_INDEX].dtype == torch.int64
        assert int(named[keys.EDGE_INDEX].max()) < 512
        assert named[keys.EDGE_CELL_SHIFT].shape == (24576, 3) and named[keys.CELL].shape == (1, 3, 3)
        assert all(tensor.is_contiguous() for tensor in inputs)
