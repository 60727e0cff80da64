"""The layer-by-layer evaluation with a feature exchange (what pair_style nequip runs on several
MPI ranks), through the C++ runtime in one process: the periodic images of a frame's atoms are
ghost nodes at their images' positions, with edges centered on the owned atoms only, and the
exchange copies each owner's features to its ghosts after every layer and sums the ghosts'
gradients back onto the owner. The result must be the eager model's on the folded frame."""

import re

import numpy as np
import pytest

from nequip._runtime import InputError, Model, NonFiniteOutputError
from nequip.inference.compiled import images_as_ghosts
from fixtures.edited_files import with_pth_metadata
from runtime_cases import assert_matches, eager_outputs, random_frames


def unfolded(frame):
    """(pos, atom_types, edge_index, owner) of the frame with its images as ghost nodes."""
    pos, edge_index, owner = images_as_ghosts(frame["pos"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
    return pos, frame["atom_types"][owner], edge_index, owner


@pytest.fixture(scope="module")
def deep(deep_model):
    return Model(str(deep_model.pth)), deep_model.eager


@pytest.fixture(
    params=["pth-3-layers", "pth-every-row", "pt2-float64", "pt2-float32", "pt2-float64-portable"], scope="module"
)
def layered(request, deep_model, compiled_models, tmp_path_factory):
    """(runtime model, eager model, dtype) of files that run layer by layer: .pt2 files whose
    parts call the message passing kernels, and one without them (portable); a .pth whose
    layers compute the local nodes' output only (metadata layer_rows), and the same file as
    older versions made it, whose layers compute every node's."""
    if request.param == "pth-3-layers":
        model = Model(str(deep_model.pth))
        assert model.metadata["layer_rows"] == "selected"
        return model, deep_model.eager, "float64"
    if request.param == "pth-every-row":
        path = with_pth_metadata(deep_model.pth, tmp_path_factory.mktemp("older") / "m.nequip.pth", "layer_rows", None)
        model = Model(str(path))
        assert "layer_rows" not in model.metadata
        return model, deep_model.eager, "float64"
    if request.param == "pt2-float64-portable":
        path = compiled_models.portable["float64", "pair_nequip_domain"]
        return Model(str(path)), compiled_models.eager["float64"], "float64"
    dtype = request.param.split("-")[1]
    key = (dtype, "aotinductor", "pair_nequip_domain")
    return Model(str(compiled_models[key])), compiled_models.eager[dtype], dtype


def test_deep_torchscript_file_exchanges_features(deep):
    model, eager = deep
    assert model.exchanges_features
    # l_max 1, 6 channels: 6x0e + 6x1o, then 6x0e + 6x1o + 6x1e, then the readout's 6x0e
    assert model.metadata["layer_feature_widths"] == "24 42 6"
    assert [layer.irreps_out.dim for layer in eager.layers] == [24, 42, 6]


@pytest.mark.slow  # compiles a layer-by-layer file (minutes)
@pytest.mark.parametrize("seed", [3, 4])
def test_layer_by_layer_with_ghost_images_is_the_folded_frame(layered, seed):
    model, eager, dtype = layered
    compared = 0
    for frame in random_frames(12, seed=seed, per_edge_type_cutoff=model.per_edge_type_cutoff):
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
        assert_matches(got["total_energy"], expected["total_energy"], dtype, "total_energy")
        assert_matches(got["atomic_energy"][:num_atoms], expected["atomic_energy"], dtype, "atomic_energy")
        assert not got["atomic_energy"][num_atoms:].any()
        assert_matches(forces, expected["forces"], dtype, "forces")
        assert_matches(got["virial"], expected["virial"], dtype, "virial")
        assert_matches(atom_virial, expected["atom_virial"], dtype, "atom_virial")
        compared += 1
    assert compared >= 4


def test_layer_by_layer_with_periodic_edges_and_no_ghosts_is_the_frame(layered):
    """Every node owned (nothing to exchange) and edges that reach periodic images by their
    cell shifts: the parts give the whole frame's results, as compute() does."""
    model, eager, dtype = layered
    frames = random_frames(12, seed=5, per_edge_type_cutoff=model.per_edge_type_cutoff)
    shifted = [frame for frame in frames if frame["edge_cell_shift"].any()]
    assert len(shifted) >= 3
    for frame in frames:
        num_atoms = len(frame["pos"])
        got = model.compute_exchanging(frame["pos"], frame["atom_types"], frame["edge_index"], np.arange(num_atoms),
                                       cell=frame["cell"], edge_cell_shift=frame["edge_cell_shift"])  # fmt: skip
        expected = eager_outputs(eager, frame)
        for name in ("total_energy", "atomic_energy", "forces", "virial", "atom_virial"):
            assert_matches(got[name], expected[name], dtype, name)


def test_without_the_exchange_the_result_differs(deep):
    """Ghosts that keep their own (neighborless) features give other energies: the exchange is
    what makes the result exact, not an accident of the frame."""
    model, eager = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)
    exchanged = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])
    # every node its own owner: ghosts become owned atoms that nothing updates
    alone = model.compute_exchanging(pos, types, edge_index, np.arange(len(pos)), cell=frame["cell"])
    num_atoms = len(frame["pos"])
    assert abs(alone["atomic_energy"][:num_atoms].sum() - exchanged["total_energy"]) > 1e-6


def owned_by_a_ghost(owner):
    owner = owner.copy()
    owner[0] = np.flatnonzero(owner != np.arange(len(owner)))[0]  # node 0 copies a ghost
    return owner


def with_first(value):
    def change(owner):
        owner = owner.copy()
        owner[0] = value(owner)
        return owner

    return change


@pytest.mark.parametrize(
    "malformed, message",
    [
        (owned_by_a_ghost, "owner: an owner node must be owned (its own owner)"),
        (lambda owner: owner[:-1], "owner must have shape (N,), one owner node per node"),
        (lambda owner: owner.reshape(1, -1), "owner must have shape (N,), one owner node per node"),
        (with_first(len), "owner holds a node index outside [0, N)"),
        (with_first(lambda owner: -1), "owner holds a node index outside [0, N)"),
    ],
    ids=["ghost-owner", "short", "two-dimensional", "past-the-end", "negative"],
)
def test_a_malformed_owner_is_refused(deep, malformed, message):
    model, _ = deep
    frame = random_frames(3, seed=3)[2]
    pos, types, edge_index, owner = unfolded(frame)
    assert (owner != np.arange(len(owner))).any()  # the frame has ghosts
    with pytest.raises(InputError, match=re.escape(message)):
        model.compute_exchanging(pos, types, edge_index, malformed(owner), cell=frame["cell"])


def test_files_without_the_parts_cannot_exchange(compiled_models):
    model = Model(str(compiled_models["float64", "aotinductor", "pair_nequip"]))
    assert not model.exchanges_features
    frame = random_frames(3, seed=3)[2]
    with pytest.raises(InputError, match="cannot run layer by layer with a feature exchange"):
        model.compute_exchanging(frame["pos"], frame["atom_types"], frame["edge_index"], np.arange(len(frame["pos"])))


def test_an_edge_centered_on_a_ghost_is_refused(deep):
    """Its owner's edges are already there: counting them again would be silently wrong."""
    model, _ = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)
    ghost = len(frame["pos"])
    edge_index = np.concatenate([edge_index, [[ghost], [0]]], axis=1)
    message = f"edge {edge_index.shape[1] - 1} is centered on node {ghost}, which is not local"
    with pytest.raises(InputError, match=re.escape(message)):
        model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])


def test_a_package_whose_parts_do_not_match_its_layers_is_refused(compiled_models, tmp_path):
    from nequip._runtime import ModelFileError
    from fixtures.edited_files import with_pt2_metadata

    source = compiled_models["float64", "aotinductor", "pair_nequip_domain"]
    path = with_pt2_metadata(source, tmp_path / "m.nequip.pt2", "nequip_aoti_parts", "node_embedding layer_0")
    expected = (
        "node_embedding edge_embedding layer_0 layer_1 energy_readout_vjp layer_1_vjp layer_0_vjp edge_embedding_vjp"
    )
    message = (
        f"{path}: metadata key 'nequip_aoti_parts' is malformed: expected '{expected}' (num_layers 2), "
        "got 'node_embedding layer_0'"
    )
    with pytest.raises(ModelFileError, match="^" + re.escape(message) + "$"):
        Model(str(path))


class OwnerCopies:
    """The exchange of one process written in Python: ghosts copy their owners' rows, and give
    their gradients back to them (what nequip::FeatureExchange asks of a front end)."""

    def __init__(self, owner):
        self.owner = owner
        self.ghost = owner != np.arange(len(owner))
        self.calls = []

    def forward(self, rows):
        self.calls.append(("forward", rows.shape[1]))
        rows[:] = rows[self.owner]

    def reverse(self, rows):
        self.calls.append(("reverse", rows.shape[1]))
        np.add.at(rows, self.owner[self.ghost], rows[self.ghost])
        rows[self.ghost] = 0.0


def test_a_front_ends_exchange_changes_the_rows_in_place(deep):
    """An exchange given from outside sees every layer's rows and changes them where the
    runtime reads them: the result is that of the runtime's own exchange."""
    model, _ = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)
    exchange = OwnerCopies(owner)
    got = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"], exchange=exchange)
    expected = model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"])
    # three layers of widths 24 42 6: the last layer's features stay put
    assert exchange.calls == [("forward", 24), ("forward", 42), ("reverse", 42), ("reverse", 24)]
    for name in ("total_energy", "forces", "atom_virial"):
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12)


class ExchangeFailed(Exception):
    pass


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_what_the_exchange_raises_reaches_the_caller_unchanged(deep, direction):
    """An exchange's own error (LAMMPS' error->one on a rank) is the front end's to report: the
    runtime passes it through as it was raised, neither wrapped in a TorchError nor reported a
    second time."""
    model, _ = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)

    class Failing(OwnerCopies):
        def forward(self, rows):
            if direction == "forward":
                raise ExchangeFailed("rank 1 did not answer")
            super().forward(rows)

        def reverse(self, rows):
            raise ExchangeFailed("rank 1 did not answer")

    with pytest.raises(ExchangeFailed, match="^rank 1 did not answer$"):
        model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"], exchange=Failing(owner))


def test_features_that_come_in_non_finite_point_at_another_rank(deep):
    """On several ranks, one rank's overlapping atoms make its features NaN, and its neighbors
    receive them through the exchange: their error names that cause, not the weights."""
    model, _ = deep
    frame = next(f for f in random_frames(12, seed=3) if len(unfolded(f)[0]) > len(f["pos"]))
    pos, types, edge_index, owner = unfolded(frame)

    class NaNFromAnotherRank(OwnerCopies):
        def forward(self, rows):
            super().forward(rows)
            rows[self.ghost] = np.nan

    closest = np.linalg.norm(pos[edge_index[1]] - pos[edge_index[0]], axis=1).min()
    message = (
        f"{model.path}: the model gave a non-finite energy or forces (NaN or infinity): node features (or their "
        "gradients) came in non-finite from the other ranks through the per-layer exchange, while this rank's own "
        f"were finite and none of its atoms overlap (the closest two atoms are {closest:.3g} Å apart, not closer "
        "than 0.1 * r_max = 0.4 Å): the cause is on another rank, which reports it"
    )
    with pytest.raises(NonFiniteOutputError, match="^" + re.escape(message) + "$"):
        model.compute_exchanging(pos, types, edge_index, owner, cell=frame["cell"], exchange=NaNFromAnotherRank(owner))
