"""The layer-by-layer evaluation with a feature exchange (what pair_style nequip runs on several
MPI ranks), through the C++ runtime in one process: the periodic images of a frame's atoms are
ghost nodes at their images' positions, with edges centred on the owned atoms only, and the
exchange copies each owner's features to its ghosts after every layer and sums the ghosts'
gradients back onto the owner. The result must be the eager model's on the folded frame."""

import re

import numpy as np
import pytest

from nequip._runtime import InputError, Model
from runtime_cases import assert_matches, eager_outputs, random_frames


def unfolded(frame):
    """The frame with one ghost node per (atom, nonzero image shift) its edges reach: (pos,
    atom_types, edge_index, owner), edges from owned atoms to owned atoms or ghosts, no shifts."""
    num_atoms = len(frame["pos"])
    pos, types, owner = list(frame["pos"]), list(frame["atom_types"]), list(range(num_atoms))
    ghost_of = {}
    neighbours = []
    for (i, j), shift in zip(frame["edge_index"].T, frame["edge_cell_shift"]):
        if not shift.any():
            neighbours.append(j)
            continue
        key = (int(j), tuple(shift))
        if key not in ghost_of:
            ghost_of[key] = len(pos)
            pos.append(frame["pos"][j] + shift @ frame["cell"])
            types.append(frame["atom_types"][j])
            owner.append(int(j))
        neighbours.append(ghost_of[key])
    edge_index = np.stack([frame["edge_index"][0], np.array(neighbours, dtype=np.int64)])
    return np.array(pos).reshape(-1, 3), np.array(types), edge_index, np.array(owner)


@pytest.fixture(scope="module")
def deep(deep_model):
    return Model(str(deep_model.pth)), deep_model.eager


def test_deep_torchscript_file_exchanges_features(deep):
    model, eager = deep
    assert model.exchanges_features
    # l_max 1, 6 channels: 6x0e + 6x1o, then 6x0e + 6x1o + 6x1e, then the readout's 6x0e
    assert model.metadata["layer_feature_widths"] == "24 42 6"
    assert [layer.irreps_out.dim for layer in eager.layers] == [24, 42, 6]


@pytest.mark.parametrize("seed", [3, 4])
def test_layer_by_layer_with_ghost_images_is_the_folded_frame(deep, seed):
    model, eager = deep
    compared = 0
    for frame in random_frames(12, seed=seed):
        pos, types, edge_index, owner = unfolded(frame)
        if len(pos) == len(frame["pos"]):
            continue  # no images: nothing to exchange
        got = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])
        expected = eager_outputs(eager, frame)
        num_atoms = len(frame["pos"])
        # the ghosts' forces and virials belong to their owners, as LAMMPS sums them
        forces = np.zeros((num_atoms, 3))
        np.add.at(forces, owner, got["forces"])
        atom_virial = np.zeros((num_atoms, 3, 3))
        np.add.at(atom_virial, owner, got["atom_virial"])
        assert_matches(got["total_energy"], expected["total_energy"], "float64", "total_energy")
        assert_matches(got["atomic_energy"][:num_atoms], expected["atomic_energy"], "float64", "atomic_energy")
        assert not got["atomic_energy"][num_atoms:].any()
        assert_matches(forces, expected["forces"], "float64", "forces")
        assert_matches(got["virial"], expected["virial"], "float64", "virial")
        assert_matches(atom_virial, expected["atom_virial"], "float64", "atom_virial")
        compared += 1
    assert compared >= 4


def test_without_the_exchange_the_result_differs(deep):
    """Ghosts that keep their own (neighbourless) features give other energies: the exchange is
    what makes the result exact, not an accident of the frame."""
    model, eager = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)
    exchanged = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])
    # every node its own owner: ghosts become owned atoms that nothing updates
    alone = model.compute_exchanging(pos, types, edge_index, np.arange(len(pos)), cell=frame["cell"])
    num_atoms = len(frame["pos"])
    assert abs(alone["atomic_energy"][:num_atoms].sum() - exchanged["total_energy"]) > 1e-6


def test_an_owner_that_is_a_ghost_is_refused(deep):
    model, _ = deep
    frame = random_frames(3, seed=3)[2]
    pos, types, edge_index, owner = unfolded(frame)
    owner = owner.copy()
    owner[0] = len(pos) - 1 if owner[-1] != len(pos) - 1 else 1
    with pytest.raises(InputError, match=re.escape("owner: an owner node must be owned (its own owner)")):
        model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])


def test_files_without_layer_widths_cannot_exchange(compiled_models):
    model = Model(str(compiled_models["float64", "aotinductor", "pair_nequip_domain"]))
    assert not model.exchanges_features
    frame = random_frames(3, seed=3)[2]
    with pytest.raises(InputError, match="cannot run layer by layer with a feature exchange"):
        model.compute_exchanging(frame["pos"], frame["atom_types"], frame["edge_index"], np.arange(len(frame["pos"])))
