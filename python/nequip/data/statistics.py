"""Dataset statistics that initialise a model: neighbor counts, energy shifts, force scales.

Every function takes a list of frame dicts or one batched dict (see ``batch_frames``).
Per-type results are (num_types,) float64 arrays in model type order; a type absent from the
data gets the global value (or a zero energy shift), so that every entry is usable.
"""

from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import keys
from .atomic_data import AtomicData, batch_frames

Data = Union[Sequence[AtomicData], AtomicData]  # frames, or one (batched) dict


def average_num_neighbors(data: Data) -> float:
    """Number of edges per atom over all frames."""
    data = _as_batch(data)
    return data[keys.EDGE_INDEX].shape[1] / len(data[keys.POS])


def shortest_edge_length(data: Data) -> Optional[float]:
    """The shortest edge (Å) of the neighbor lists: the closest pair of atoms within the cutoff
    over all frames (periodic images included); None when there are no edges."""
    data = _as_batch(data)
    edge_index = data[keys.EDGE_INDEX]
    if edge_index.shape[1] == 0:
        return None
    pos = data[keys.POS]
    edge_vec = pos[edge_index[1]] - pos[edge_index[0]]
    if keys.EDGE_CELL_SHIFT in data:
        cell = data[keys.CELL].view(-1, 3, 3)[data[keys.BATCH][edge_index[0]]]
        edge_vec = edge_vec + torch.bmm(data[keys.EDGE_CELL_SHIFT].unsqueeze(1), cell).squeeze(1)
    return float(torch.linalg.norm(edge_vec, dim=-1).min())


def per_type_average_num_neighbors(data: Data, num_types: int) -> np.ndarray:
    """(num_types,) number of edges per center atom of each type."""
    data = _as_batch(data)
    atom_types = data[keys.ATOM_TYPES].numpy()
    center_types = atom_types[data[keys.EDGE_INDEX][0].numpy()]
    num_edges = np.bincount(center_types, minlength=num_types)
    num_atoms = np.bincount(atom_types, minlength=num_types)
    return _per_type_or_global(num_edges, num_atoms, average_num_neighbors(data))


def per_type_energy_shifts(data: Data, num_types: int) -> np.ndarray:
    """(num_types,) per-atom energies whose sums best fit the total energies (least squares).

    Solves ``counts @ shifts ~ total_energy`` with ``counts`` (F, num_types) the atoms of each
    type per frame, by ``numpy.linalg.lstsq``. When the compositions do not fix the shifts
    (an absent type, or every frame of one stoichiometry), this is the minimum-norm solution:
    absent types get 0 and the energy of one stoichiometry is spread in proportion to it.
    """
    data = _as_batch(data)
    _require(data, keys.TOTAL_ENERGY, "per_type_energy_shifts")
    counts = np.zeros((len(data[keys.NUM_ATOMS]), num_types))
    np.add.at(counts, (data[keys.BATCH].numpy(), data[keys.ATOM_TYPES].numpy()), 1.0)
    shifts, *_ = np.linalg.lstsq(counts, data[keys.TOTAL_ENERGY].numpy().reshape(-1), rcond=None)
    return shifts


def force_rms(data: Data) -> float:
    """Root mean square of all force components."""
    data = _as_batch(data)
    _require(data, keys.FORCES, "force_rms")
    return float(torch.sqrt(torch.mean(data[keys.FORCES] ** 2)))


def per_type_force_rms(data: Data, num_types: int) -> np.ndarray:
    """(num_types,) root mean square of the force components on the atoms of each type."""
    data = _as_batch(data)
    _require(data, keys.FORCES, "per_type_force_rms")
    atom_types = data[keys.ATOM_TYPES].numpy()
    squares_per_atom = (data[keys.FORCES] ** 2).sum(dim=1).numpy()
    sum_squares = np.bincount(atom_types, weights=squares_per_atom, minlength=num_types)
    num_components = 3 * np.bincount(atom_types, minlength=num_types)
    return np.sqrt(_per_type_or_global(sum_squares, num_components, force_rms(data) ** 2))


def _per_type_or_global(total: np.ndarray, count: np.ndarray, global_value: float) -> np.ndarray:
    """``total / count`` per type, ``global_value`` where ``count`` is 0."""
    return np.where(count > 0, total / np.maximum(count, 1), global_value).astype(np.float64)


def _as_batch(data: Data) -> AtomicData:
    """A batched dict, with ``batch`` and ``num_atoms``, from frames or a (batched) dict."""
    if not isinstance(data, dict):
        return batch_frames(data)
    if keys.NUM_ATOMS in data:
        return data
    num_atoms = len(data[keys.POS])
    return {
        **data,
        keys.BATCH: torch.zeros(num_atoms, dtype=torch.int64),
        keys.NUM_ATOMS: torch.tensor([num_atoms]),
    }


def _require(data: AtomicData, label: str, statistic: str) -> None:
    if label not in data:
        raise ValueError(
            f"{statistic} needs {label} labels but the data has none; load them with from_ase"
        )
