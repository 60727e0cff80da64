"""A compiled model (``*.nequip.pth`` or ``*.nequip.pt2``) called from Python with tensors.

Compiled files have one reader, the C++ runtime (``nequip._runtime``), which also serves
LAMMPS: it reads and checks the metadata, checks and converts every input (an AOTInductor
model checks nothing itself), checks the outputs are finite and returns float64 outputs.
:class:`CompiledModel` is the one Python wrapper of it: it turns a FILE_CONTRACT §1 dictionary
of tensors into the runtime's arguments and its results back into tensors of the contract's
shapes, so that a compiled file stands in for the eager model (:mod:`nequip.inference`).
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nequip import _runtime
from nequip.data import batch_frames, keys

from .opened import OpenedModel, PathLike, has_volume

# FILE_CONTRACT §1 shapes of the outputs (N atoms, one frame); the runtime drops the frame axis.
_OUTPUT_SHAPES = {
    keys.TOTAL_ENERGY: lambda n: (1, 1),
    keys.ATOMIC_ENERGY: lambda n: (n, 1),
    keys.FORCES: lambda n: (n, 3),
    keys.STRESS: lambda n: (1, 3, 3),
    keys.VIRIAL: lambda n: (1, 3, 3),
    keys.ATOM_VIRIAL: lambda n: (n, 3, 3),
    keys.FORCE_DEVIATION: lambda n: (n,),
    keys.ENERGY_DEVIATION: lambda n: (1, 1),
    keys.VIRIAL_DEVIATION: lambda n: (1, 3, 3),
}


# What a committee's layer-by-layer call gives beside its outputs (runtime Outputs::member_forces ...).
_MEMBER_OUTPUTS = ("member_forces", "member_energies", "member_virials")


# What a batch call takes of each frame (batch_frames adds batch and num_atoms).
_BATCH_INPUTS = (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX, keys.CELL, keys.EDGE_CELL_SHIFT)


class CompiledModel(OpenedModel):
    """A compiled NequIP model on the C++ runtime, called like the eager model: one frame a
    call, or (:meth:`evaluate`, a file that takes batches) several.

    Beside :class:`OpenedModel`'s attributes: ``mode`` ("torchscript" or "aotinductor", the
    file's ``kind``), ``inputs`` (the fields the file takes; ``local_mask`` is optional) and
    ``outputs`` (the fields the file itself returns; a call also gives what the runtime derives
    from them: the total energy, and the stress from the virial or the reverse).
    Raises the runtime's errors (``nequip._runtime.Error``; ModelFileError and DeviceError for
    a file it refuses, InputError for bad inputs, NonFiniteOutputError for NaN energies or forces).
    """

    def __init__(self, path: PathLike, device: Optional[str] = None):
        self.path = Path(path)
        self.runtime = _runtime.Model(str(self.path), device)
        self.mode: str = self.runtime.format
        self.kind = self.mode
        self.device: str = self.runtime.device
        self.metadata: Dict[str, str] = dict(self.runtime.metadata)
        self.type_names: Tuple[str, ...] = tuple(self.runtime.type_names)
        self.r_max: float = self.runtime.r_max
        cutoffs = self.runtime.per_edge_type_cutoff
        self.per_edge_type_cutoff = None if cutoffs is None else np.asarray(cutoffs, dtype=np.float64)
        self.inputs: Tuple[str, ...] = tuple(self.runtime.input_names)
        self.outputs: Tuple[str, ...] = tuple(self.runtime.output_names)
        self.gives_stress = keys.STRESS in self.outputs or keys.VIRIAL in self.outputs
        self.committee_size: int = self.runtime.committee_size

    @property
    def exchanges_features(self) -> bool:
        """Whether the file also runs layer by layer with a feature exchange (LAMMPS on several
        MPI ranks; :meth:`call_exchanging`)."""
        return self.runtime.exchanges_features

    def call_exchanging(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Evaluate one frame as one LAMMPS rank with the per-layer exchange does: the periodic
        images its edges reach are ghost nodes (:func:`images_as_ghosts`) whose features come
        from their atoms between layers. Returns what ``__call__`` does, the ghosts' forces and
        per-atom virials added to their atoms' (a committee's deviations from its members'
        forces, energies and virials, the ghosts' forces added to their atoms' first)."""
        arrays = {name: value.detach().cpu().numpy() for name, value in data.items()}
        num_atoms = arrays[keys.POS].shape[0]
        pos, edge_index, owner = images_as_ghosts(
            arrays[keys.POS], arrays[keys.EDGE_INDEX], arrays.get(keys.EDGE_CELL_SHIFT), arrays.get(keys.CELL)
        )
        atom_types = arrays[keys.ATOM_TYPES][owner]
        out = self.runtime.compute_exchanging(pos, atom_types, edge_index, owner, cell=arrays.get(keys.CELL))
        # a committee: each member's forces, energy and virial, whose deviations are taken once
        # the ghosts' forces are their atoms' (what pair_style nequip does over its ranks)
        members = {name: torch.as_tensor(out.pop(name)) for name in _MEMBER_OUTPUTS if name in out}
        folded = {}
        if members:
            forces = torch.zeros((self.committee_size, num_atoms, 3), dtype=torch.float64).index_add(
                1, torch.from_numpy(owner), members["member_forces"]
            )
            folded[keys.FORCE_DEVIATION] = (forces - forces.mean(0)).square().sum(-1).mean(0).sqrt()
            folded[keys.ENERGY_DEVIATION] = members["member_energies"].std(unbiased=False).reshape(1, 1)
            folded[keys.VIRIAL_DEVIATION] = members["member_virials"].std(0, unbiased=False).reshape(1, 3, 3)
        for name, value in out.items():
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
            if name in (keys.FORCES, keys.ATOM_VIRIAL):
                value = torch.zeros((num_atoms,) + value.shape[1:], dtype=value.dtype).index_add(
                    0, torch.from_numpy(owner), value
                )
            elif name == keys.ATOMIC_ENERGY:
                value = value[:num_atoms]
            folded[name] = value.reshape(_OUTPUT_SHAPES[name](num_atoms))
        return folded

    def __repr__(self) -> str:
        return f"CompiledModel({str(self.path)!r}, mode={self.mode!r}, device={self.device!r})"

    def __call__(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Evaluate one frame (FILE_CONTRACT §1 keys; ``cell`` and ``edge_cell_shift`` may be
        absent for a non-periodic system; ``local_mask`` only for files that take it).

        Returns float64 CPU tensors of the contract's shapes: total_energy, atomic_energy,
        forces, and, where the file gives either, the virial and (for a cell with a volume)
        the stress; per-atom virials where the file gives them; a committee's deviations
        (force_deviation (N,), energy_deviation (1, 1), virial_deviation (1, 3, 3)).
        """
        for name in (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX):
            if name not in data:
                raise KeyError(f"input '{name}' is missing")

        def array(name: str) -> Optional[np.ndarray]:
            value = data.get(name)
            # any dtype and strides: the runtime converts them
            return None if value is None else value.detach().cpu().numpy()

        out = self.runtime.compute(
            array(keys.POS),
            array(keys.ATOM_TYPES),
            array(keys.EDGE_INDEX),
            edge_cell_shift=array(keys.EDGE_CELL_SHIFT),
            cell=array(keys.CELL),
            local_mask=array(keys.LOCAL_MASK),
        )
        num_atoms = out[keys.FORCES].shape[0]
        return {
            name: torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(_OUTPUT_SHAPES[name](num_atoms))
            for name, value in out.items()
            if name in _OUTPUT_SHAPES
        }

    @property
    def takes_batches(self) -> bool:
        """Whether the file evaluates several frames per call (target ``batch``, our ``.pth``)."""
        return self.runtime.takes_batches

    def evaluate(self, frames: Sequence[Dict[str, torch.Tensor]], batch_size: int = 8) -> List[Dict[str, torch.Tensor]]:
        """Each frame's outputs, as :meth:`__call__` gives them (the stress only for a cell
        with a volume): ``batch_size`` frames per call where the file takes batches
        (:attr:`takes_batches`), else one at a time. Frames with a ``local_mask`` go one at a time."""
        if not self.takes_batches or batch_size <= 1 or any(keys.LOCAL_MASK in frame for frame in frames):
            return [self(frame) for frame in frames]
        outputs: List[Dict[str, torch.Tensor]] = []
        for start in range(0, len(frames), batch_size):
            outputs.extend(self._call_batch(frames[start : start + batch_size]))
        return outputs

    def _call_batch(self, frames: Sequence[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
        """One runtime call on ``frames`` batched (:func:`nequip.data.batch_frames`), its
        outputs split into each frame's."""
        for index, frame in enumerate(frames):
            for name in (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX):
                if name not in frame:
                    raise KeyError(f"frame {index}: input '{name}' is missing")
        data = batch_frames([{name: frame[name] for name in _BATCH_INPUTS if name in frame} for frame in frames])
        arrays = {name: value.detach().cpu().numpy() for name, value in data.items()}
        out = self.runtime.compute_batch(
            arrays[keys.POS],
            arrays[keys.ATOM_TYPES],
            arrays[keys.EDGE_INDEX],
            arrays[keys.BATCH],
            arrays[keys.NUM_ATOMS],
            edge_cell_shift=arrays[keys.EDGE_CELL_SHIFT],
            cell=arrays[keys.CELL].reshape(-1, 3, 3),
        )
        out = {name: torch.from_numpy(value) for name, value in out.items()}
        results = []
        first_atom = 0
        for index, num_atoms in enumerate(arrays[keys.NUM_ATOMS].tolist()):
            atoms = slice(first_atom, first_atom + num_atoms)
            first_atom = atoms.stop
            result = {
                keys.TOTAL_ENERGY: out[keys.TOTAL_ENERGY][index].reshape(1, 1),
                keys.ATOMIC_ENERGY: out[keys.ATOMIC_ENERGY][atoms].reshape(-1, 1),
                keys.FORCES: out[keys.FORCES][atoms],
            }
            if keys.ATOM_VIRIAL in out:
                result[keys.ATOM_VIRIAL] = out[keys.ATOM_VIRIAL][atoms]
            # as one frame: the virial where the file gives it (for a file giving only the
            # stress, where the cell has a volume), the stress where the cell has a volume
            if keys.VIRIAL in out and bool(torch.isfinite(out[keys.VIRIAL][index]).all()):
                result[keys.VIRIAL] = out[keys.VIRIAL][index].reshape(1, 3, 3)
            if keys.STRESS in out and has_volume(frames[index]):
                result[keys.STRESS] = out[keys.STRESS][index].reshape(1, 3, 3)
            results.append(result)
        return results


def images_as_ghosts(
    pos: np.ndarray, edge_index: np.ndarray, edge_cell_shift: Optional[np.ndarray], cell: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame's periodic images as ghost nodes, as a LAMMPS rank sees them: one ghost per
    (atom, nonzero image shift) that an edge reaches, at its image's position.

    Returns ``(pos, edge_index, owner)``: the N atoms then the ghosts, the edges with each
    image neighbor replaced by its ghost (and no shifts), and each node's atom (its own index
    for the N atoms).
    """
    num_atoms = pos.shape[0]
    neighbors = edge_index[1].copy()
    if edge_cell_shift is None or cell is None:
        return pos, edge_index, np.arange(num_atoms)
    image = np.any(edge_cell_shift != 0, axis=1)
    reached = np.concatenate([edge_index[1][image, None].astype(np.float64), edge_cell_shift[image]], axis=1)
    ghosts, ghost_of_edge = np.unique(reached, axis=0, return_inverse=True)
    ghost_atoms = ghosts[:, 0].astype(np.int64)
    neighbors[image] = num_atoms + ghost_of_edge.reshape(-1)
    all_pos = np.concatenate([pos, pos[ghost_atoms] + ghosts[:, 1:] @ np.asarray(cell).reshape(3, 3)])
    owner = np.concatenate([np.arange(num_atoms), ghost_atoms])
    return all_pos, np.stack([edge_index[0], neighbors]), owner

