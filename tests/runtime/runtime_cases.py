"""Random frames for the C++ runtime tests and the comparison against the eager model
(copies of compiled files with edited metadata: fixtures.edited_files)."""

from typing import Dict, List, Optional

import numpy as np
import torch

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip.data import compute_neighbor_list

# max |runtime - eager| <= tolerance * max(1, max |eager|), output by output
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}

# pbc of the random frames, cycled: bulk, molecule, slab
PBC_CHOICES = ((True, True, True), (False, False, False), (True, True, False))


def random_frames(count: int, per_edge_type_cutoff=None, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """``count`` random frames as numpy arrays (pos, atom_types, edge_index, edge_cell_shift,
    cell (3, 3), pbc): an isolated atom, two atoms out of each other's reach, then 1-16 atoms
    in random triclinic cells of 3-8 Å (often smaller than the cutoff), periodic along all,
    none or two axes."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        if index == 0:
            pos, cell, pbc = np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool)
        elif index == 1:
            pos, cell, pbc = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, R_MAX + 1.0]]), np.zeros((3, 3)), np.zeros(3, bool)
        else:
            num_atoms = int(rng.integers(1, 17))
            cell = np.diag(rng.uniform(3.0, 8.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (1 - np.eye(3))
            pos = _spread_out(rng.uniform(0.0, 1.0, (num_atoms, 3)) @ cell, cell, rng)
            pbc = np.array(PBC_CHOICES[index % len(PBC_CHOICES)])
        atom_types = rng.integers(0, len(TYPE_NAMES), len(pos))
        edge_index, edge_cell_shift = compute_neighbor_list(
            pos, cell, pbc, R_MAX, atom_types=atom_types, per_edge_type_cutoff=per_edge_type_cutoff
        )
        frames.append(
            dict(pos=pos, atom_types=atom_types, edge_index=edge_index, edge_cell_shift=edge_cell_shift, cell=cell, pbc=pbc)
        )
    return frames


def _spread_out(pos: np.ndarray, cell: np.ndarray, rng, min_distance: float = 1.0) -> np.ndarray:
    """Moves atoms (within the cell) until no two are closer than ``min_distance`` without
    images: keeps the model in the range of distances it is meant for."""
    for i in range(1, len(pos)):
        for _ in range(100):
            if np.linalg.norm(pos[:i] - pos[i], axis=1).min() >= min_distance:
                break
            pos[i] = rng.uniform(0.0, 1.0, 3) @ cell
    return pos


def eager_outputs(
    model: torch.nn.Module, frame: Dict[str, np.ndarray], local_mask: Optional[np.ndarray] = None
) -> Dict[str, np.ndarray]:
    """The eager model's outputs on ``frame`` (with ``local_mask`` if given), float64 numpy,
    per-frame dimensions dropped."""
    data = {
        "pos": torch.from_numpy(frame["pos"]),
        "atom_types": torch.from_numpy(frame["atom_types"]),
        "edge_index": torch.from_numpy(frame["edge_index"]),
        "edge_cell_shift": torch.from_numpy(frame["edge_cell_shift"]),
        "cell": torch.from_numpy(frame["cell"]).reshape(1, 3, 3),
    }
    if local_mask is not None:
        data["local_mask"] = torch.from_numpy(local_mask)
    out = model(data)
    return {
        "total_energy": out["total_energy"].detach().numpy().reshape(()),
        "atomic_energy": out["atomic_energy"].detach().numpy().reshape(-1),
        "forces": out["forces"].detach().numpy(),
        "stress": out["stress"].detach().numpy().reshape(3, 3),
        "virial": out["virial"].detach().numpy().reshape(3, 3),
        "atom_virial": out["atom_virial"].detach().numpy(),
    }


def assert_matches(actual, expected, model_dtype: str, name: str) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= TOLERANCE[model_dtype] * scale, f"{name}: max |runtime - eager| = {error:.3g} (scale {scale:.3g})"


def compute(model, frame: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``nequip._runtime.Model.compute`` on a frame of :func:`random_frames`."""
    return model.compute(frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
