"""The one frame of example data a package carries, so that it can be compiled anywhere.

AOT compilation traces the model on an example input; storing one in the package means whoever
compiles it needs neither the training data nor its neighbour-list settings. The frame is a
FILE_CONTRACT §1 dictionary of inputs only (``pos, atom_types, edge_index, cell,
edge_cell_shift, pbc``; labels are dropped). It is stored with :func:`torch.save` and read with
``weights_only=True``: plain tensors, no code.
"""

import io
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .format import EXAMPLE_DATA_ENTRY, PathLike, read_package_entry

# nequip.data (and with it ase) is imported only where a frame is made: loading a package
# must stay quick for the ASE calculator and nequip-compile

# synthetic frame: a 2x2x2 simple cubic arrangement whose spacing is this fraction of r_max,
# so every atom has neighbours (about 19) whatever the cutoff, rattled so no two edges coincide
_SYNTHETIC_SPACING_PER_R_MAX = 0.6
_SYNTHETIC_RATTLE_PER_SPACING = 0.05
_SYNTHETIC_SEED = 0


def synthetic_frame(
    type_names: Sequence[str], r_max: float, per_edge_type_cutoff: Optional[Sequence[float]] = None
) -> Dict[str, torch.Tensor]:
    """A small periodic frame in which every type appears and every atom has neighbours.

    Eight atoms on a 2×2×2 simple cubic arrangement of spacing ``0.6 r_max`` in a cubic periodic
    cell (smaller than the cutoff, so edges to periodic images of an atom itself occur too),
    types assigned in turn (``type_names[i % num_types]``; with more than eight types, one atom
    per type), positions rattled by 5% of the spacing with a fixed seed. Deterministic.
    """
    from nequip.data import compute_neighbor_list, keys

    num_types = len(type_names)
    spacing = _SYNTHETIC_SPACING_PER_R_MAX * float(r_max)
    cells_per_side = 2
    while cells_per_side**3 < num_types:
        cells_per_side += 1
    grid = np.stack(np.meshgrid(*[np.arange(cells_per_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    pos = grid * spacing + rng.normal(scale=_SYNTHETIC_RATTLE_PER_SPACING * spacing, size=grid.shape)
    cell = np.eye(3) * cells_per_side * spacing
    pbc = np.ones(3, dtype=bool)
    atom_types = np.arange(len(pos), dtype=np.int64) % num_types
    cutoffs = None if per_edge_type_cutoff is None else np.asarray(per_edge_type_cutoff).reshape(num_types, num_types)
    edge_index, edge_cell_shift = compute_neighbor_list(pos, cell, pbc, r_max, atom_types, cutoffs)
    return {
        keys.POS: torch.as_tensor(pos, dtype=torch.float64),
        keys.ATOM_TYPES: torch.as_tensor(atom_types, dtype=torch.int64),
        keys.EDGE_INDEX: torch.as_tensor(edge_index, dtype=torch.int64),
        keys.CELL: torch.as_tensor(cell, dtype=torch.float64).view(1, 3, 3),
        keys.EDGE_CELL_SHIFT: torch.as_tensor(edge_cell_shift, dtype=torch.float64),
        keys.PBC: torch.as_tensor(pbc).view(1, 3),
    }


def example_inputs(frame: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The input keys of ``frame``, contiguous, without labels or batch keys."""
    from nequip.data import keys

    input_keys = (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX, keys.CELL, keys.EDGE_CELL_SHIFT, keys.PBC)
    return {key: frame[key].contiguous() for key in input_keys if key in frame}


def serialize_frame(frame: Dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(example_inputs(frame), buffer)
    return buffer.getvalue()


def deserialize_frame(data: bytes) -> Dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_example_data(path: PathLike) -> Dict[str, torch.Tensor]:
    """The example frame of the package at ``path`` (no code is executed: plain tensors)."""
    return deserialize_frame(read_package_entry(Path(path), EXAMPLE_DATA_ENTRY))
