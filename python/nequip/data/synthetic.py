"""The synthetic frame: a small periodic structure made from a model's types and cutoff alone.

It stands in wherever a frame is needed and no data is at hand: the example data of a package
built without its training data, the compiler's check of a compiled file against the eager
model when no example is given, and the frame AOTInductor traces the model on.
"""

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from . import keys
from .neighbors import compute_neighbor_list

# a simple cubic arrangement whose spacing is this fraction of r_max, so every atom has
# neighbors (about 19) whatever the cutoff, rattled so that no two edges coincide
_SPACING_PER_R_MAX = 0.6
_RATTLE_PER_SPACING = 0.05
_SEED = 0


def synthetic_frame(
    type_names: Sequence[str], r_max: float, per_edge_type_cutoff: Optional[Sequence[float]] = None
) -> Dict[str, torch.Tensor]:
    """A small periodic frame (FILE_CONTRACT §1 inputs) in which every type appears and every atom has neighbors.

    Eight atoms on a 2×2×2 simple cubic arrangement of spacing ``0.6 r_max`` in a cubic periodic
    cell of side ``1.2 r_max`` (so edges cross the cell boundary to periodic images), types
    assigned in turn (``type_names[i % num_types]``; with more than eight types, 3×3×3 or
    more, so that every type has an atom), positions rattled by 5% of the spacing with a fixed
    seed. The neighbor list is that of ``r_max``, pruned by ``per_edge_type_cutoff``
    (``num_types**2`` values, row-major, row = center type) when given. Deterministic: the same
    arguments give the same frame.

    Returns ``pos, atom_types, edge_index, cell, edge_cell_shift, pbc``.
    """
    num_types = len(type_names)
    spacing = _SPACING_PER_R_MAX * float(r_max)
    cells_per_side = 2
    while cells_per_side**3 < num_types:
        cells_per_side += 1
    grid = np.stack(np.meshgrid(*[np.arange(cells_per_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    rng = np.random.default_rng(_SEED)
    pos = grid * spacing + rng.normal(scale=_RATTLE_PER_SPACING * spacing, size=grid.shape)
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
