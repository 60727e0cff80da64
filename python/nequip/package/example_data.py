"""The one frame of example data a package carries, so that it can be compiled anywhere.

AOT compilation traces the model on an example input; storing one in the package means whoever
compiles it needs neither the training data nor its neighbor-list settings. The frame is a
FILE_CONTRACT §1 dictionary of inputs only (``pos, atom_types, edge_index, cell,
edge_cell_shift, pbc``; labels are dropped). It is stored with :func:`torch.save` and read with
``weights_only=True``: plain tensors, no code.
"""

import io
from pathlib import Path
from typing import Dict

import torch

from ..load import EXAMPLE_DATA_ENTRY, PathLike, is_ecosystem_package, read_package_entry, read_package_metadata

# nequip.data (and with it ase) is imported only where a frame is made: loading a package
# must stay quick for the ASE calculator and nequip-compile


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
    """The example frame of the package at ``path`` (no code is executed: plain tensors; a
    package of the other NequIP release keeps its frame pickled, unpickled by torch.package)."""
    if is_ecosystem_package(read_package_metadata(path)):
        from nequip.ecosystem.packages import load_example_frame

        return load_example_frame(Path(path))
    return deserialize_frame(read_package_entry(Path(path), EXAMPLE_DATA_ENTRY))
