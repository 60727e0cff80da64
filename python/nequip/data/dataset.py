"""Reading structure files, and a dataset of frames with their neighbour lists."""

from pathlib import Path
from typing import List, Optional, Sequence, Union

import ase
import ase.io
import torch

from . import keys
from .atomic_data import AtomicData, TypeMapper, batch_frames, from_ase


def read_frames(
    path: Union[str, Path], index: Union[str, int] = ":", format: Optional[str] = None
) -> List[ase.Atoms]:
    """The structures in ``path`` selected by ``index`` (ASE slice syntax), via ``ase.io.read``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file {path} does not exist; check the path")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as err:  # ASE's readers raise many exception types for a bad file
        raise ValueError(f"could not read structures from {path}: {err}") from err
    frames = [frames] if isinstance(frames, ase.Atoms) else list(frames)
    if not frames:
        raise ValueError(f"could not read structures from {path}: no frames at index {index!r}")
    return frames


class AtomicDataset(torch.utils.data.Dataset):
    """Frames as atomic data dictionaries (FILE_CONTRACT §1), neighbour lists included.

    Build it from frame dicts, or with :meth:`from_ase` / :meth:`from_file`, which compute
    every neighbour list once, here. Batch with
    ``DataLoader(dataset, batch_size, collate_fn=AtomicDataset.collate_fn)``.
    """

    collate_fn = staticmethod(batch_frames)

    def __init__(self, frames: Sequence[AtomicData]):
        self.frames = list(frames)
        required = (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX)
        for index, frame in enumerate(self.frames):
            missing = [key for key in required if key not in frame]
            if missing:
                raise ValueError(
                    f"frame {index} lacks {missing}; build frames with from_ase, which adds them"
                )

    @classmethod
    def from_ase(
        cls,
        atoms_list: Sequence[ase.Atoms],
        type_mapper: TypeMapper,
        r_max: float,
        **from_ase_kwargs,
    ) -> "AtomicDataset":
        """Dataset of ``atoms_list``; ``from_ase_kwargs`` as in :func:`nequip.data.from_ase`."""
        frames = []
        for index, atoms in enumerate(atoms_list):
            try:
                frames.append(from_ase(atoms, type_mapper, r_max, **from_ase_kwargs))
            except ValueError as err:
                raise ValueError(f"frame {index}: {err}") from None
        return cls(frames)

    @classmethod
    def from_file(
        cls,
        path: Union[str, Path],
        type_mapper: TypeMapper,
        r_max: float,
        index: Union[str, int] = ":",
        format: Optional[str] = None,
        **from_ase_kwargs,
    ) -> "AtomicDataset":
        """Dataset of the structures in ``path`` (see :func:`read_frames`)."""
        return cls.from_ase(read_frames(path, index, format), type_mapper, r_max, **from_ase_kwargs)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> AtomicData:
        return self.frames[index]
