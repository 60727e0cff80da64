"""Reading structure files, and a dataset of frames with their neighbor lists."""

import difflib
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Union

import ase
import ase.io
import ase.io.formats
import torch

from . import keys
from .atomic_data import AtomicData, TypeMapper, batch_frames, from_ase


def ase_format_problem(name: str) -> Optional[str]:
    """Why ``name`` is not an ASE format that reads structures, or None when it is one."""
    formats = ase.io.formats.ioformats
    if name in formats and formats[name].can_read:
        return None
    readable = [key for key, io_format in formats.items() if io_format.can_read]
    close = difflib.get_close_matches(name, readable, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"{name!r} is not a format ASE can read; {hint}give an ASE format name"
        " (e.g. 'extxyz'; `ase info --formats` lists them)"
    )


def _model_file_kind(path: Path) -> Optional[str]:
    """What a file of this project that holds no structures is (checkpoint, package, ...), or None.

    They are zip archives (torch's format), which no ASE reader takes; ASE's own error
    would not say what the file is.
    """
    from ..load import COMPILED_KINDS, ModelFileError, model_file_kind

    if not zipfile.is_zipfile(path):
        return None
    try:
        kind = model_file_kind(path)
    except ModelFileError:
        return "a zip archive"
    descriptions = {"checkpoint": "a training checkpoint", "package": "a model package"}
    return "a compiled model" if kind in COMPILED_KINDS else descriptions[kind]


def read_frames(
    path: Union[str, Path], index: Union[str, int] = ":", format: Optional[str] = None
) -> List[ase.Atoms]:
    """The structures in ``path`` selected by ``index`` (ASE slice syntax), via ``ase.io.read``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file {path} does not exist; check the path")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file of structures")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; give a file of structures with their labels (e.g. extxyz)")
    kind = _model_file_kind(path)
    if kind is not None:
        raise ValueError(
            f"{path} is {kind}, not a file of structures; give structures with their labels"
            " in a format ASE reads (e.g. extxyz)"
        )
    if format is not None:
        problem = ase_format_problem(format)
        if problem is not None:
            raise ValueError(f"format {problem}")
    else:
        try:
            # a name ASE guesses may still have no reader ("yaml")
            guessed = ase.io.formats.filetype(str(path), read=True)
        except Exception:  # ASE raises several types, with messages such as "yaml"
            guessed = None
        if guessed is None or ase_format_problem(guessed) is not None:
            raise ValueError(
                f"could not read structures from {path}: ASE cannot tell its format from the file's name"
                " or contents; give the ASE format name (e.g. 'extxyz'; `ase info --formats` lists them)"
            )
    try:
        frames = ase.io.read(path, index=index, format=format)
    except (StopIteration, IndexError) as err:  # an integer index past the last frame
        raise ValueError(f"could not read structures from {path}: no frame at index {index!r}") from err
    except Exception as err:  # ASE's readers raise many exception types for a bad file
        raise ValueError(f"could not read structures from {path}: {err}") from err
    frames = [frames] if isinstance(frames, ase.Atoms) else list(frames)
    if not frames:
        selected = "it holds none" if index == ":" else f"no frames at index {index!r}"
        raise ValueError(f"could not read structures from {path}: {selected}")
    return frames


class AtomicDataset(torch.utils.data.Dataset):
    """Frames as atomic data dictionaries (FILE_CONTRACT §1), neighbor lists included.

    Build it from frame dicts, or with :meth:`from_ase` / :meth:`from_file`, which compute
    every neighbor list once, here. Batch with
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
        source: Optional[Union[str, Path]] = None,
        frame_numbers: Optional[Sequence[int]] = None,
        **from_ase_kwargs,
    ) -> "AtomicDataset":
        """Dataset of ``atoms_list``; ``from_ase_kwargs`` as in :func:`nequip.data.from_ase`.

        A frame that cannot be used is reported as ``<source>: frame <n>: <reason>``, with
        ``n`` from ``frame_numbers`` (the frames' positions in their file; by default their
        positions in ``atoms_list``).
        """
        if frame_numbers is None:
            frame_numbers = range(len(atoms_list))
        prefix = "" if source is None else f"{source}: "
        frames = []
        for number, atoms in zip(frame_numbers, atoms_list):
            try:
                frames.append(from_ase(atoms, type_mapper, r_max, **from_ase_kwargs))
            except ValueError as err:
                raise ValueError(f"{prefix}frame {number}: {err}") from None
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
        frames = read_frames(path, format=format)
        # select here, so that errors number the frames by their positions in the file
        selection = ase.io.formats.string2index(index) if isinstance(index, str) else index
        numbers = list(range(len(frames)))
        numbers = numbers[selection] if isinstance(selection, slice) else [numbers[selection]]
        return cls.from_ase(
            [frames[n] for n in numbers], type_mapper, r_max, source=path, frame_numbers=numbers, **from_ase_kwargs
        )

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> AtomicData:
        return self.frames[index]
