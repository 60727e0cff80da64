"""Load a compiled model (``*.nequip.pth`` or ``*.nequip.pt2``) and call it from Python.

The metadata is checked on load (FILE_CONTRACT §2, §4), and every call prepares its inputs
exactly as the compiled file needs them: an AOTInductor model checks nothing itself, and a
wrong dtype, an int32 index or a non-contiguous tensor would give wrong numbers or crash.
"""

from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from nequip.data import keys

from . import aotinductor, torchscript
from .contract import (
    DEVICES,
    EXTENSIONS,
    TORCHSCRIPT,
    MetadataError,
    parse_aoti_fields,
    parse_metadata,
    parse_torchscript_fields,
)

PathLike = Union[str, Path]

_INDEX_INPUTS = (keys.EDGE_INDEX, keys.ATOM_TYPES)


def mode_of(path: PathLike) -> str:
    """The compile mode a file name stands for, from its extension."""
    name = Path(path).name
    for mode, extension in EXTENSIONS.items():
        if name.endswith(extension):
            return mode
    raise ValueError(
        f"{path}: not a compiled model: expected a file name ending in "
        + " or ".join(f"'{ext}'" for ext in EXTENSIONS.values())
    )


def check_device(device: str) -> torch.device:
    """``device`` as a torch.device, refusing unknown devices and CUDA on a machine without it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICES:
        raise ValueError(f"unknown device {str(device)!r}: expected one of {', '.join(DEVICES)}")
    device = parsed
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} requested, but CUDA is not available to this torch ({torch.__version__})"
        )
    return device


class CompiledModel:
    """A compiled NequIP model, called like the eager model on one frame.

    Attributes: ``path``, ``mode`` ("torchscript" or "aotinductor"), ``device``, ``metadata``
    (every key of the file, as strings), ``model_metadata`` (FILE_CONTRACT §2, parsed),
    ``type_names``, ``r_max``, ``per_edge_type_cutoff`` ((T, T) nested tuple or None),
    ``inputs`` (the fields the file takes) and ``outputs`` (the names a call returns).
    """

    def __init__(self, path: PathLike, device: str = "cpu", *, mode: Optional[str] = None):
        # ``mode`` overrides the extension, for files staged under another name.
        self.path = Path(path)
        self.mode = mode or mode_of(self.path)
        self.device = check_device(device)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such compiled model file")

        if self.mode == TORCHSCRIPT:
            self.metadata = torchscript.read_metadata(self.path)
            self.model_metadata = parse_metadata(self.metadata, str(self.path))
            self._module = torchscript.load(self.path, self.device)
            self.inputs, self.outputs = parse_torchscript_fields(self.metadata, str(self.path))
        else:
            self._module = aotinductor.load(self.path, str(self.device))
            self.metadata = aotinductor.read_metadata(self._module)
            self.model_metadata = parse_metadata(self.metadata, str(self.path))
            compiled_for = self.metadata.get("AOTI_DEVICE_KEY")
            if compiled_for != self.device.type:
                raise MetadataError(
                    f"{self.path}: compiled for device {compiled_for!r}, cannot run on "
                    f"{self.device.type!r} (compile it again with --device {self.device.type})"
                )
            self.inputs, self.outputs = parse_aoti_fields(self.metadata, str(self.path))

    @property
    def type_names(self) -> Tuple[str, ...]:
        return self.model_metadata.type_names

    @property
    def r_max(self) -> float:
        return self.model_metadata.r_max

    @property
    def per_edge_type_cutoff(self):
        return self.model_metadata.per_edge_type_cutoff

    def __repr__(self) -> str:
        return f"CompiledModel({str(self.path)!r}, mode={self.mode!r}, device={str(self.device)!r})"

    def __call__(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Evaluate one frame (FILE_CONTRACT §1 keys; ``cell`` and ``edge_cell_shift`` may be
        absent for a non-periodic system; ``local_mask`` only for files that take it) and
        return the outputs named in ``self.outputs``."""
        inputs = self.prepare_inputs(data)
        if self.mode == TORCHSCRIPT:
            out = self._module(inputs)
            return {name: out[name] for name in self.outputs}
        flat = self._module(*(inputs[name] for name in self.inputs))
        return dict(zip(self.outputs, flat))

    def prepare_inputs(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Contiguous tensors of exactly the contract's dtypes and shapes, on ``self.device``."""
        for name in (keys.POS, keys.EDGE_INDEX, keys.ATOM_TYPES):
            if name not in data:
                raise KeyError(f"input '{name}' is missing")
        for name in _INDEX_INPUTS:
            if name in data and (data[name].is_floating_point() or data[name].is_complex()):
                raise TypeError(f"input '{name}' must be an integer tensor, got {data[name].dtype}")

        def prepared(name: str, dtype: torch.dtype) -> torch.Tensor:
            return data[name].to(device=self.device, dtype=dtype).contiguous()

        pos = prepared(keys.POS, torch.float64)
        edge_index = prepared(keys.EDGE_INDEX, torch.int64)
        atom_types = prepared(keys.ATOM_TYPES, torch.int64)
        num_atoms = pos.shape[0] if pos.dim() == 2 else -1
        if pos.dim() != 2 or pos.shape[1] != 3 or num_atoms < 1:
            raise ValueError(f"input 'pos' must have shape (N, 3) with N >= 1, got {tuple(pos.shape)}")
        if atom_types.shape != (num_atoms,):
            raise ValueError(
                f"input 'atom_types' must have shape (N,) = ({num_atoms},), got {tuple(atom_types.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"input 'edge_index' must have shape (2, E), got {tuple(edge_index.shape)}")
        num_edges = edge_index.shape[1]
        # Out-of-range indices would make a compiled model read outside its buffers.
        num_types = self.model_metadata.num_types
        if atom_types.min() < 0 or atom_types.max() >= num_types:
            raise ValueError(
                f"input 'atom_types' must hold type indices 0..{num_types - 1} "
                f"({' '.join(self.type_names)}), got values in "
                f"{int(atom_types.min())}..{int(atom_types.max())}"
            )
        if num_edges > 0 and (edge_index.min() < 0 or edge_index.max() >= num_atoms):
            raise ValueError(f"input 'edge_index' must hold atom indices 0..{num_atoms - 1}")

        periodic = keys.CELL in data
        if periodic != (keys.EDGE_CELL_SHIFT in data):
            raise KeyError("inputs 'cell' and 'edge_cell_shift' must be given together, or neither")
        if periodic:
            cell = prepared(keys.CELL, torch.float64)
            edge_cell_shift = prepared(keys.EDGE_CELL_SHIFT, torch.float64)
            if cell.shape == (3, 3):
                cell = cell.unsqueeze(0)
            if cell.shape != (1, 3, 3):
                raise ValueError(f"input 'cell' must have shape (1, 3, 3), got {tuple(cell.shape)}")
            if edge_cell_shift.shape != (num_edges, 3):
                raise ValueError(
                    f"input 'edge_cell_shift' must have shape (E, 3) = ({num_edges}, 3), "
                    f"got {tuple(edge_cell_shift.shape)}"
                )
        else:
            # A non-periodic frame is a periodic one with a zero cell and no image shifts.
            cell = torch.zeros((1, 3, 3), dtype=torch.float64, device=self.device)
            edge_cell_shift = torch.zeros((num_edges, 3), dtype=torch.float64, device=self.device)

        prepared_inputs = {
            keys.POS: pos,
            keys.EDGE_INDEX: edge_index,
            keys.ATOM_TYPES: atom_types,
            keys.CELL: cell,
            keys.EDGE_CELL_SHIFT: edge_cell_shift,
        }
        if keys.LOCAL_MASK in data:
            if keys.LOCAL_MASK not in self.inputs:
                raise ValueError(
                    f"{self.path} does not take input '{keys.LOCAL_MASK}': compile it with "
                    f"--target pair_nequip_domain (.pt2) or again with this version of nequip (.pth)"
                )
            local_mask = data[keys.LOCAL_MASK]
            if local_mask.is_floating_point() or local_mask.is_complex() or local_mask.shape != (num_atoms,):
                raise ValueError(
                    f"input '{keys.LOCAL_MASK}' must be a bool or integer tensor of shape (N,) = ({num_atoms},), "
                    f"got {local_mask.dtype} {tuple(local_mask.shape)}"
                )
            prepared_inputs[keys.LOCAL_MASK] = local_mask.to(device=self.device, dtype=torch.bool).contiguous()
        elif keys.LOCAL_MASK in self.inputs and self.mode != TORCHSCRIPT:
            # every atom is local; a TorchScript model treats a missing mask the same way
            prepared_inputs[keys.LOCAL_MASK] = torch.ones(num_atoms, dtype=torch.bool, device=self.device)
        return prepared_inputs


def load_compiled(path: PathLike, device: str = "cpu") -> CompiledModel:
    """Load a ``*.nequip.pth`` or ``*.nequip.pt2`` file for calls on ``device``."""
    return CompiledModel(path, device)
