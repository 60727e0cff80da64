import re

import numpy as np
import pytest

from nequip.data import TypeMapper, batch_frames, from_ase
from nequip.data import statistics

NUM_TYPES = 3  # Si, C and an absent Ge


@pytest.fixture
def frames(make_atoms):
    mapper = TypeMapper(["Si", "C", "Ge"])
    sizes = (5, 8, 3, 6, 7)
    return [from_ase(make_atoms(seed, size), mapper, 4.0) for seed, size in enumerate(sizes)]


def per_frame(frames, key):
    return [frame[key].numpy() for frame in frames]


@pytest.mark.parametrize("batched", [False, True])
def test_average_num_neighbors_is_edges_per_atom(frames, batched):
    data = batch_frames(frames) if batched else frames
    num_edges = sum(edge_index.shape[1] for edge_index in per_frame(frames, "edge_index"))
    num_atoms = sum(len(pos) for pos in per_frame(frames, "pos"))
    assert statistics.average_num_neighbors(data) == pytest.approx(num_edges / num_atoms)


def test_per_type_average_num_neighbors_counts_edges_per_center_type(frames):
    result = statistics.per_type_average_num_neighbors(frames, NUM_TYPES)
    types_per_frame = per_frame(frames, "atom_types")
    center_types = [types[edge_index[0]] for types, edge_index in
                    zip(types_per_frame, per_frame(frames, "edge_index"))]
    for t in range(2):
        num_edges = sum(np.sum(types == t) for types in center_types)
        num_atoms = sum(np.sum(types == t) for types in types_per_frame)
        assert result[t] == pytest.approx(num_edges / num_atoms)
    assert result[2] == pytest.approx(statistics.average_num_neighbors(frames))


def test_per_type_energy_shifts_recover_known_shifts(frames):
    # energies made of known per-type shifts: the least-squares fit must give them back,
    # and a type absent from the data gets 0
    known = np.array([-4.25, -7.5])
    for frame in frames:
        counts = np.bincount(frame["atom_types"].numpy(), minlength=2)
        frame["total_energy"] = frame["total_energy"].new_tensor([[float(counts @ known)]])
    shifts = statistics.per_type_energy_shifts(frames, NUM_TYPES)
    np.testing.assert_allclose(shifts, [*known, 0.0], atol=1e-10)


def test_force_rms_global_and_per_type(frames):
    forces = np.concatenate(per_frame(frames, "forces"))
    types = np.concatenate(per_frame(frames, "atom_types"))
    global_rms = np.sqrt(np.mean(forces**2))
    assert statistics.force_rms(frames) == pytest.approx(global_rms)
    expected = [np.sqrt(np.mean(forces[types == t] ** 2)) for t in range(2)] + [global_rms]
    per_type = statistics.per_type_force_rms(batch_frames(frames), NUM_TYPES)
    np.testing.assert_allclose(per_type, expected)


def test_statistics_of_a_single_frame_dict(frames):
    frame = frames[1]
    num_edges, num_atoms = frame["edge_index"].shape[1], len(frame["pos"])
    assert statistics.average_num_neighbors(frame) == num_edges / num_atoms
    counts = np.bincount(frame["atom_types"].numpy(), minlength=NUM_TYPES)
    shifts = statistics.per_type_energy_shifts(frame, NUM_TYPES)
    assert shifts @ counts == pytest.approx(frame["total_energy"].item())


def test_energy_shifts_without_energies_are_rejected(frames):
    unlabelled = [{k: v for k, v in frame.items() if k != "total_energy"} for frame in frames]
    message = (
        "per_type_energy_shifts needs total_energy labels but the data has none; "
        "load them with from_ase"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        statistics.per_type_energy_shifts(unlabelled, NUM_TYPES)
