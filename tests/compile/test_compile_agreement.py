"""Compiled files compute what the eager model computes: eager = .pth = .pt2 (both targets)."""

import pytest
import torch
from ase import Atoms

from fixtures.compiled import COMPILED_KEYS, PER_EDGE_TYPE_CUTOFF, R_MAX, TYPE_NAMES, compiled_key_id
from nequip.compile import TOLERANCE, relative_error
from nequip.data import TypeMapper, from_ase

from .systems import SYSTEMS


@pytest.mark.slow
@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("key", COMPILED_KEYS, ids=compiled_key_id)
def test_compiled_outputs_match_eager_model(key, system, systems, loaded_models, eager_outputs):
    dtype = key[0]
    compiled = loaded_models[key]
    expected = eager_outputs[dtype, system]
    got = compiled(systems[system])

    num_atoms = systems[system]["pos"].shape[0]
    shapes = {
        "atomic_energy": (num_atoms, 1),
        "total_energy": (1, 1),
        "forces": (num_atoms, 3),
        "stress": (1, 3, 3),
        "virial": (1, 3, 3),
        "atom_virial": (num_atoms, 3, 3),
    }
    # the runtime sums the total energy where the file gives atomic energies only, derives the
    # stress from the virial or the reverse for a cell with a volume, and omits the stress of
    # one without (a molecule's: it has none)
    names = set(compiled.outputs) | {"total_energy"}
    if "cell" in systems[system] and names & {"stress", "virial"}:
        names |= {"stress", "virial"}
    else:
        names.discard("stress")
    assert set(got) == names
    for name, value in got.items():
        assert value.dtype == torch.float64, name
        assert value.shape == shapes[name], name
        error = relative_error(value, expected[name])
        assert error <= TOLERANCE[dtype], f"{name}: relative error of compiled vs eager {error:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in COMPILED_KEYS if k[1] == "aotinductor"], ids=compiled_key_id)
def test_aotinductor_file_has_the_targets_flat_outputs(key, loaded_models):
    expected = {
        "ase": ("atomic_energy", "total_energy", "forces", "stress"),
        "pair_nequip": ("atomic_energy", "forces", "virial"),
        "pair_nequip_domain": ("atomic_energy", "forces", "virial", "atom_virial"),
        "batch": ("atomic_energy", "total_energy", "forces", "stress", "virial"),
    }
    assert loaded_models[key].outputs == expected[key[2]]


@pytest.mark.slow
@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize(
    "key", [k for k in COMPILED_KEYS if k[2] in (None, "pair_nequip_domain")], ids=compiled_key_id
)
def test_local_mask_reaches_the_compiled_energy_sum(key, system, systems, compiled_models, loaded_models):
    """With every other atom not local, compiled = eager; the mask changes the energy."""
    dtype = key[0]
    compiled = loaded_models[key]
    assert "local_mask" in compiled.inputs
    frame = systems[system]
    num_atoms = frame["pos"].shape[0]
    masked = dict(frame, local_mask=torch.arange(num_atoms) % 2 == 0)
    expected = compiled_models.eager[dtype](dict(masked))
    got = compiled(masked)
    for name, value in got.items():
        error = relative_error(value, expected[name])
        assert error <= TOLERANCE[dtype], f"{name}: relative error of compiled vs eager {error:.3g}"
    assert torch.all(got["atomic_energy"][1::2] == 0)
    if num_atoms > 1 and "total_energy" in got:
        unmasked = compiled(frame)
        assert not torch.allclose(got["total_energy"], unmasked["total_energy"])


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in COMPILED_KEYS if k[0] == "float32"], ids=compiled_key_id)
def test_per_edge_type_cutoff_is_compiled_in(key, loaded_models):
    """C-C edges beyond the C-C cutoff (3.0) but within r_max (4.0) change nothing."""
    compiled = loaded_models[key]
    assert compiled.per_edge_type_cutoff.tolist() == [list(row) for row in PER_EDGE_TYPE_CUTOFF]
    atoms = Atoms("CCSi", positions=[[0.0, 0.0, 0.0], [3.4, 0.0, 0.0], [1.2, 1.5, 0.0]])
    frame = from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX)
    del frame["cell"], frame["edge_cell_shift"]
    center, neighbor = frame["edge_index"]
    carbon_pair = (frame["atom_types"][center] == 1) & (frame["atom_types"][neighbor] == 1)
    assert carbon_pair.sum() == 2  # both directions, within r_max
    pruned = dict(frame, edge_index=frame["edge_index"][:, ~carbon_pair])

    full, without = compiled(frame), compiled(pruned)
    for name in full:
        assert relative_error(full[name], without[name]) <= TOLERANCE["float32"], name
    # and the Si-C edges (3.5 cutoff) do count
    assert full["forces"].abs().max() > 1e-3
