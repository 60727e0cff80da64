"""One frame as an atomic data dictionary (FILE_CONTRACT §1), and frames batched into one graph."""

from typing import Dict, Iterable, Mapping, Optional, Sequence

import ase
import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from . import keys
from .neighbors import compute_neighbor_list

AtomicData = Dict[str, torch.Tensor]

# Where ASE keeps each label, in atoms.calc.results and in atoms.info / atoms.arrays.
_ASE_LABEL_NAMES = {
    keys.TOTAL_ENERGY: ("energy", "total_energy"),
    keys.FORCES: ("forces",),
    keys.STRESS: ("stress",),
}
# How batch_frames concatenates each key.
_PER_ATOM_KEYS = (keys.POS, keys.ATOM_TYPES, keys.FORCES, keys.ATOMIC_ENERGY, keys.FORCE_WEIGHT)
_PER_FRAME_KEYS = (keys.CELL, keys.PBC, keys.TOTAL_ENERGY, keys.STRESS, keys.VIRIAL, keys.FRAME_WEIGHT)
_PER_EDGE_KEYS = (keys.EDGE_CELL_SHIFT,)


class TypeMapper:
    """Maps chemical symbols to model type indices.

    Args:
        type_names: the model's type names, in model type order.
        species_to_type: chemical symbol -> type name; by default every type name is the
            chemical symbol it stands for.
        remedy: the way out that the error for an unknown species gives (the caller's own
            option for the mapping, or what else to do where there is none).
    """

    def __init__(
        self,
        type_names: Sequence[str],
        species_to_type: Optional[Mapping[str, str]] = None,
        remedy: str = "map each species to one of them with species_to_type",
    ):
        self.type_names = list(type_names)
        self.remedy = remedy
        if len(set(self.type_names)) != len(self.type_names):
            raise ValueError(f"type_names {self.type_names} has duplicates; give each type once")
        if species_to_type is None:
            species_to_type = {name: name for name in self.type_names}
        unknown_types = sorted(set(species_to_type.values()) - set(self.type_names))
        if unknown_types:
            raise ValueError(
                f"species_to_type maps to {unknown_types}, which are not among the model's types "
                f"{self.type_names}; map every species to one of them"
            )
        self.species_to_index = {
            species: self.type_names.index(name) for species, name in species_to_type.items()
        }

    @property
    def num_types(self) -> int:
        return len(self.type_names)

    def __call__(self, symbols: Iterable[str]) -> np.ndarray:
        """(N,) int64 type indices of ``symbols``."""
        symbols = list(symbols)
        unknown = sorted(set(symbols) - self.species_to_index.keys())
        if unknown:
            raise ValueError(
                f"unknown species {', '.join(unknown)}: the model's types are {self.type_names}; {self.remedy}"
            )
        return np.array([self.species_to_index[s] for s in symbols], dtype=np.int64)

    def __repr__(self) -> str:
        return f"TypeMapper({self.species_to_index})"


def from_ase(
    atoms: ase.Atoms,
    type_mapper: TypeMapper,
    r_max: float,
    per_edge_type_cutoff: Optional[np.ndarray] = None,
    energy_units_to_eV: float = 1.0,
    length_units_to_A: float = 1.0,
    labels: Sequence[str] = keys.LABEL_KEYS,
    require_labels: bool = False,
) -> AtomicData:
    """One frame: geometry, neighbor list and the requested labels present in ``atoms``.

    Labels come from ``atoms.calc.results`` (as ASE's readers leave them) or else from
    ``atoms.info`` (``energy`` or ``total_energy``, ``stress``) and ``atoms.arrays``
    (``forces``); stress may be Voigt (6,) in ASE order (xx yy zz yz xz xy) or 3x3, ASE sign.
    Energies are scaled by ``energy_units_to_eV``, forces by energy/length and stress by
    energy/length³; positions and cell by ``length_units_to_A``.

    Returns:
        pos (N, 3), atom_types (N,), edge_index (2, E), cell (1, 3, 3), edge_cell_shift (E, 3),
        pbc (1, 3), and of ``labels`` those present: total_energy (1, 1), forces (N, 3),
        stress (1, 3, 3). Floats are float64.
    """
    if len(atoms) == 0:
        raise ValueError("structure has no atoms; remove empty frames from the data")
    name = atoms.get_chemical_formula()
    pos = atoms.positions * length_units_to_A
    if not np.isfinite(pos).all():
        raise ValueError(f"structure {name} has NaN or infinite positions; fix or remove the frame")
    cell = atoms.cell.array * length_units_to_A
    if not np.isfinite(cell).all():
        raise ValueError(f"structure {name} has a NaN or infinite cell; fix or remove the frame")
    pbc = atoms.pbc.copy()
    if np.linalg.matrix_rank(cell[pbc]) < pbc.sum():
        raise ValueError(
            f"structure {name} is periodic along axes {np.flatnonzero(pbc).tolist()} but its "
            "lattice vectors there are zero or linearly dependent; fix the cell or turn off pbc "
            "along them"
        )
    atom_types = type_mapper(atoms.get_chemical_symbols())
    edge_index, edge_cell_shift = compute_neighbor_list(
        pos, cell, pbc, r_max, atom_types=atom_types, per_edge_type_cutoff=per_edge_type_cutoff
    )
    frame = {
        keys.POS: torch.from_numpy(pos),
        keys.ATOM_TYPES: torch.from_numpy(atom_types),
        keys.EDGE_INDEX: torch.from_numpy(edge_index),
        keys.CELL: torch.from_numpy(cell).reshape(1, 3, 3),
        keys.EDGE_CELL_SHIFT: torch.from_numpy(edge_cell_shift),
        keys.PBC: torch.from_numpy(pbc).reshape(1, 3),
    }

    unit = {
        keys.TOTAL_ENERGY: energy_units_to_eV,
        keys.FORCES: energy_units_to_eV / length_units_to_A,
        keys.STRESS: energy_units_to_eV / length_units_to_A**3,
    }
    shape = {keys.TOTAL_ENERGY: (1, 1), keys.FORCES: (len(atoms), 3), keys.STRESS: (1, 3, 3)}
    for label in labels:
        if label not in _ASE_LABEL_NAMES:
            raise ValueError(
                f"unknown label {label!r}; labels must be among {list(keys.LABEL_KEYS)}"
            )
        value = _find_label(atoms, label)
        if value is None:
            if require_labels:
                raise ValueError(f"structure {name} has no {label} label; add it to the data")
            continue
        if not np.isfinite(value).all():
            raise ValueError(f"label {label!r} is not finite ({_first_non_finite(value, label)}); fix or remove the frame")
        if label == keys.STRESS and value.size == 6:
            value = voigt_6_to_full_3x3_stress(value)
        if value.size != np.prod(shape[label]):
            raise ValueError(
                f"structure {name} has a {label} label of shape {value.shape}, "
                f"expected {shape[label]}; fix the data"
            )
        frame[label] = torch.from_numpy(value.reshape(shape[label]) * unit[label])
    return frame


def _first_non_finite(value: np.ndarray, label: str) -> str:
    """The first NaN or infinite entry of a label, as a user finds it: 'nan', 'inf on atom 3'."""
    flat_index = int(np.flatnonzero(~np.isfinite(value))[0])
    entry = value.reshape(-1)[flat_index]
    if label == keys.FORCES:
        return f"{entry} on atom {flat_index // 3}"
    return str(entry)


def _find_label(atoms: ase.Atoms, label: str) -> Optional[np.ndarray]:
    """The raw float64 value of ``label`` in ``atoms``, or None when it has none."""
    # Read the stored results only: asking a live calculator would run it.
    per_structure = atoms.arrays if label == keys.FORCES else atoms.info
    for store in (getattr(atoms.calc, "results", {}), per_structure):
        for ase_name in _ASE_LABEL_NAMES[label]:
            if store.get(ase_name) is not None:
                return np.array(store[ase_name], dtype=np.float64)
    return None


def batch_frames(frames: Sequence[AtomicData]) -> AtomicData:
    """Concatenates single frames into one disconnected graph.

    Per-atom keys (N_f, ...) become (N, ...), per-frame keys (1, ...) become (F, ...),
    ``edge_index`` is offset by each frame's first atom, and ``batch`` (N,) int64 and
    ``num_atoms`` (F,) int64 are added. A frame without ``cell``, ``pbc`` or
    ``edge_cell_shift`` (non-periodic) gets zeros / False. Labels must be in all frames or none.
    """
    if len(frames) == 0:
        raise ValueError("batch_frames needs at least one frame")
    frames = [_with_geometry_defaults(frame) for frame in frames]
    frame_keys = set(frames[0])
    for index, frame in enumerate(frames):
        if set(frame) != frame_keys:
            raise ValueError(
                f"frame {index} has keys {sorted(frame)} but frame 0 has {sorted(frame_keys)}; "
                "give every frame the same labels"
            )
    num_atoms = torch.tensor([len(frame[keys.POS]) for frame in frames], dtype=torch.int64)
    first_atom = torch.cumsum(num_atoms, 0) - num_atoms

    batch = {}
    for key in frames[0]:
        if key == keys.EDGE_INDEX:
            shifted = [frame[key] + offset for frame, offset in zip(frames, first_atom)]
            batch[key] = torch.cat(shifted, dim=1)
        elif key in _PER_ATOM_KEYS + _PER_FRAME_KEYS + _PER_EDGE_KEYS:
            batch[key] = torch.cat([f[key] for f in frames], dim=0)
        else:
            raise ValueError(
                f"batch_frames does not know how to batch key {key!r}; remove it from the frames"
            )
    batch[keys.BATCH] = torch.repeat_interleave(torch.arange(len(frames)), num_atoms)
    batch[keys.NUM_ATOMS] = num_atoms
    return batch


def _with_geometry_defaults(frame: AtomicData) -> AtomicData:
    """``frame`` with the non-periodic cell, pbc and edge_cell_shift filled in where absent."""
    if keys.BATCH in frame:
        raise ValueError(
            "batch_frames takes single frames, got a batched one; pass its frames instead"
        )
    num_edges = frame[keys.EDGE_INDEX].shape[1]
    frame = dict(frame)
    frame.setdefault(keys.CELL, torch.zeros(1, 3, 3, dtype=torch.float64))
    frame.setdefault(keys.PBC, torch.zeros(1, 3, dtype=torch.bool))
    frame.setdefault(keys.EDGE_CELL_SHIFT, torch.zeros(num_edges, 3, dtype=torch.float64))
    return frame
