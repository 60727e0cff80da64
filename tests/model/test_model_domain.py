"""Per-atom virials and the local mask: what LAMMPS on several MPI ranks relies on.

A rank evaluates its owned atoms together with ghost copies of every atom within
num_layers * r_max, as plain (non-periodic) atoms, and sums the owned atoms' energies only
(``local_mask``). Folding forces and per-atom virials of the ghosts back onto their owners
must give exactly what the periodic model gives.
"""

import numpy as np
import pytest
import torch
from ase.build import bulk

from fixtures.compiled import R_MAX, TYPE_NAMES, build_tiny_model
from nequip.data import TypeMapper, from_ase


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("float64")


def _sic(repeat=(1, 1, 1), cubic=True, seed=0):
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=cubic).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
    atoms.rattle(0.08, seed=seed)
    return atoms


def _frame(atoms):
    return from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX)


def _edge_virial_reference(model, frame, step=1e-5):
    """Per-atom virials from edge gradients taken by central differences.

    Edge e's vector is moved alone by shifting its (float) cell shift by step * u . cell^-1.
    """
    cell = frame["cell"][0]
    inverse = torch.linalg.inv(cell)
    edge_index = frame["edge_index"]
    num_edges = edge_index.shape[1]
    model.compute_forces = model.compute_stress = False
    try:
        gradient = torch.zeros((num_edges, 3), dtype=torch.float64)
        for e in range(num_edges):
            for k in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    shift = frame["edge_cell_shift"].clone()
                    shift[e] += sign * step * inverse[k]
                    energies.append(model(dict(frame, edge_cell_shift=shift))["total_energy"].item())
                gradient[e, k] = (energies[0] - energies[1]) / (2 * step)
    finally:
        model.compute_forces = model.compute_stress = True
    center, neighbor = edge_index
    vectors = frame["pos"][neighbor] - frame["pos"][center] + frame["edge_cell_shift"] @ cell
    outer = vectors.unsqueeze(-1) * gradient.unsqueeze(-2)
    edge_virial = -0.5 * (outer + outer.transpose(-1, -2))
    atom_virial = torch.zeros((frame["pos"].shape[0], 3, 3), dtype=torch.float64)
    atom_virial.index_add_(0, center, 0.5 * edge_virial).index_add_(0, neighbor, 0.5 * edge_virial)
    return atom_virial


def test_atom_virial_matches_finite_differences_of_edge_vectors(model):
    atoms = _sic(cubic=False, seed=1)  # 2 atoms, each sees many images of itself and the other
    frame = _frame(atoms)
    assert frame["edge_index"].shape[1] > 40
    out = model(dict(frame))
    reference = _edge_virial_reference(model, frame)
    scale = reference.abs().max()
    assert scale > 1e-2
    assert (out["atom_virial"] - reference).abs().max() <= 1e-7 * scale


@pytest.mark.parametrize("periodic", [True, False])
def test_atom_virials_sum_to_the_virial(model, periodic):
    atoms = _sic(seed=2)
    frame = _frame(atoms)
    if not periodic:
        del frame["cell"], frame["edge_cell_shift"]
    out = model(dict(frame))
    summed = out["atom_virial"].sum(0)
    assert torch.allclose(summed, out["virial"][0], rtol=0, atol=1e-12 * out["virial"].abs().max())
    # symmetric per atom, and not all alike
    assert torch.equal(out["atom_virial"], out["atom_virial"].transpose(-1, -2))
    assert (out["atom_virial"] - out["atom_virial"].mean(0)).abs().max() > 1e-3


def test_local_mask_sums_the_local_energies_and_differentiates_that_sum(model):
    atoms = _sic(seed=3)
    frame = _frame(atoms)
    del frame["cell"], frame["edge_cell_shift"]  # a cluster: positions alone define it
    num_atoms = frame["pos"].shape[0]
    mask = torch.arange(num_atoms) % 3 == 0
    full = model(dict(frame))
    masked = model(dict(frame, local_mask=mask))
    assert torch.allclose(masked["total_energy"], full["atomic_energy"][mask].sum().view(1, 1), rtol=1e-14)
    assert torch.all(masked["atomic_energy"][~mask] == 0)
    assert torch.equal(masked["atomic_energy"][mask], full["atomic_energy"][mask])

    # forces on every atom, local or not, are -d(local energy)/d(position)
    step = 1e-5
    model.compute_forces = model.compute_stress = False
    try:
        for atom in (0, 1, 5):
            for k in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    pos = frame["pos"].clone()
                    pos[atom, k] += sign * step
                    energies.append(model(dict(frame, pos=pos, local_mask=mask))["total_energy"].item())
                expected = -(energies[0] - energies[1]) / (2 * step)
                assert abs(masked["forces"][atom, k].item() - expected) <= 1e-7 * max(1.0, abs(expected))
    finally:
        model.compute_forces = model.compute_stress = True


def test_ghost_shell_of_num_layers_times_r_max_reproduces_the_periodic_model(model):
    """The multi-rank decomposition, done by hand: owned atoms plus their images within
    num_layers * r_max as a non-periodic cluster, energies of the owned atoms only."""
    atoms = _sic(seed=4)
    num_atoms = len(atoms)
    periodic = model(dict(_frame(atoms)))

    reach = model.config["num_layers"] * R_MAX
    cell = atoms.cell.array
    shifts = [(a, b, c) for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)]
    shifts.sort(key=lambda shift: shift != (0, 0, 0))  # the owned atoms (no shift) first
    positions, owners = [], []
    for shift in shifts:
        shifted = atoms.positions + np.array(shift) @ cell
        # images within reach of an owned atom: the ghosts LAMMPS would send
        distance = np.linalg.norm(shifted[:, None] - atoms.positions[None], axis=-1).min(1)
        keep = distance <= reach
        positions.append(shifted[keep])
        owners.append(np.arange(num_atoms)[keep])
    cluster = atoms.__class__(
        numbers=atoms.numbers[np.concatenate(owners)], positions=np.concatenate(positions), pbc=False
    )
    owner = torch.as_tensor(np.concatenate(owners))
    assert len(cluster) > 10 * num_atoms  # the shell is the redundant work
    frame = _frame(cluster)
    del frame["cell"], frame["edge_cell_shift"]
    local = torch.zeros(len(cluster), dtype=torch.bool)
    local[:num_atoms] = True
    domain = model(dict(frame, local_mask=local))

    def fold(values):
        return torch.zeros((num_atoms,) + values.shape[1:], dtype=values.dtype).index_add(0, owner, values)

    scale = periodic["forces"].abs().max()
    assert torch.allclose(domain["total_energy"], periodic["total_energy"], rtol=1e-12, atol=0)
    assert torch.allclose(domain["atomic_energy"][:num_atoms], periodic["atomic_energy"], rtol=0, atol=1e-11)
    assert (fold(domain["forces"]) - periodic["forces"]).abs().max() <= 1e-10 * scale
    assert (domain["virial"] - periodic["virial"]).abs().max() <= 1e-10 * periodic["virial"].abs().max()
    assert (fold(domain["atom_virial"]) - periodic["atom_virial"]).abs().max() <= 1e-10 * periodic[
        "atom_virial"
    ].abs().max()


def test_a_layer_computes_the_rows_it_is_given(model):
    """``layer(..., rows)`` (what a LAMMPS rank runs: its owned atoms' rows, not the ghosts')
    gives every node's output at those rows, in their order, and the same gradients."""
    frame = _frame(_sic(repeat=(2, 1, 1), seed=3))
    edge_index, atom_types = frame["edge_index"], frame["atom_types"]
    num_atoms = atom_types.shape[0]
    edge_vec = model.edge_vectors(frame["pos"], frame["cell"], edge_index, frame["edge_cell_shift"],
                                  torch.zeros(num_atoms, dtype=torch.long))  # fmt: skip
    edge_sh, edge_radial = model.edge_embedding(edge_vec, atom_types, edge_index)
    node_attrs = model.node_attributes(atom_types)
    x = model.node_embedding(node_attrs)
    generator = torch.Generator().manual_seed(0)
    # some atoms in scrambled order, then the reference atoms
    atoms = torch.randperm(num_atoms, generator=generator)[: num_atoms // 2]
    rows = torch.cat([atoms, torch.arange(num_atoms, node_attrs.shape[0])])
    for index in range(len(model.layers)):
        inputs = [tensor.detach().requires_grad_(True) for tensor in (x, edge_sh, edge_radial)]
        every = model.layer(index, inputs[0], node_attrs, inputs[1], inputs[2], edge_index)
        chosen = model.layer(index, inputs[0], node_attrs, inputs[1], inputs[2], edge_index, rows)
        assert chosen.shape == (rows.shape[0], every.shape[1])
        torch.testing.assert_close(chosen, every[rows], rtol=0, atol=1e-12)
        cotangent = torch.randn(chosen.shape, dtype=chosen.dtype, generator=generator)
        expected = torch.autograd.grad(every[rows], inputs, cotangent, retain_graph=True)
        got = torch.autograd.grad(chosen, inputs, cotangent)
        for g, e in zip(got, expected):
            assert e.abs().max() > 0
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
        x = every.detach()
