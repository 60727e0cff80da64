"""What every opened model file offers its callers, whatever its kind (:func:`nequip.inference.open_model`)."""

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]


class OpenedModel:
    """A model file opened for evaluation: an eager model (checkpoint, package) or a compiled
    one (``.nequip.pth``, ``.nequip.pt2``, on the C++ runtime), called the same way.

    Attributes:
        path: the file.
        kind: ``"checkpoint"``, ``"package"``, ``"torchscript"`` or ``"aotinductor"``.
        device: where it runs (``"cpu"``, ``"cuda:0"``, ...).
        metadata: FILE_CONTRACT §2 keys (and the project's), every value a string.
        type_names: model type names, in type-index order.
        r_max: the cutoff (Å).
        per_edge_type_cutoff: (T, T) float64 array, row = center type, or None when every
            pair is cut off at ``r_max``.
        gives_stress: whether a call gives stress and virial (for a cell with a volume).
        committee_size: the number of models of a committee file (metadata key
            ``committee_size``), 1 for one model. A committee's calls give the mean (or first
            model's) results and its deviations (``nequip.data.keys.DEVIATION_KEYS``):
            ``force_deviation`` (N,), ``energy_deviation`` (1, 1), ``virial_deviation`` (1, 3, 3).

    A call takes one frame, a FILE_CONTRACT §1 dictionary (``cell`` and ``edge_cell_shift``
    may be absent for a non-periodic system), and returns float64 CPU tensors of the contract's
    shapes: ``total_energy`` (1, 1), ``atomic_energy`` (N, 1), ``forces`` (N, 3), and
    ``stress`` and ``virial`` (1, 3, 3) where the model gives them and the cell has a volume.
    Non-finite energies or forces raise ``nequip._runtime.NonFiniteOutputError``, naming the
    closest pair of atoms when they overlap, on every kind of file alike.
    """

    path: Path
    kind: str
    device: str
    metadata: Dict[str, str]
    type_names: Tuple[str, ...]
    r_max: float
    per_edge_type_cutoff: Optional[np.ndarray]
    gives_stress: bool
    committee_size: int = 1

    def __call__(self, frame: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, frames: Sequence[Dict[str, torch.Tensor]], batch_size: int = 8) -> List[Dict[str, torch.Tensor]]:
        """Each frame's outputs, as a call gives them; frames evaluated ``batch_size`` at a time
        where the model takes several per call (every eager model; compiled files of target
        ``batch`` and our ``.pth`` files)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, kind={self.kind!r}, device={self.device!r})"


def has_volume(frame: Dict[str, torch.Tensor]) -> bool:
    """Whether the frame's cell spans a volume (and so has a stress)."""
    cell = frame.get("cell")
    return cell is not None and float(torch.linalg.det(cell.detach().double().cpu().reshape(3, 3))) != 0.0
