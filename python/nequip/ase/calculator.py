"""ASE calculator for NequIP models: any model file, opened by :func:`nequip.inference.open_model`
(compiled files on the C++ runtime, checkpoints and packages as the eager model).

    from nequip.ase import NequIPCalculator
    atoms.calc = NequIPCalculator("model.nequip.pt2")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
"""

import numbers
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from nequip.data import TypeMapper, WarnOnceAboutDenseCells, compute_neighbor_list, keys
from nequip.inference import open_model

PathLike = Union[str, Path]


class NequIPCalculator(Calculator):
    """A NequIP model as an ASE calculator.

    Args:
        path: a compiled model (``*.nequip.pth`` or ``*.nequip.pt2``, run by the C++
            runtime ``nequip._runtime``) or a package (``*.nequip.zip``) or checkpoint
            (``*.ckpt``), run as the eager model; or a nequip.net model ID
            (``nequip.net:owner/name:version``), its package downloaded once into the cache.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:k"``. A compiled file runs on the type of
            device it was compiled for, by default that one (``cuda`` = ``cuda:0``); a package
            or checkpoint by default on the CPU.
        species_to_type_map: chemical symbol -> model type name; by default each type name
            is the chemical symbol it stands for.
        energy_units_to_eV, length_units_to_A: the model's units in eV and Å.

    Properties: energy (= free_energy), energies (per atom), forces and, for a cell with a
    volume, stress (Voigt order xx yy zz yz xz xy, ASE sign). Positions in Å, energies in eV.

    A committee file (several models compiled into one, ``nequip-compile a.nequip.zip
    b.nequip.zip ... committee.nequip.pt2``) gives their mean (or its first model's results,
    as compiled) and adds COMMITTEE_PROPERTIES, DeePMD-kit's deviations over its models:
    ``force_deviation`` (N,) eV/Å, per atom the norm of the standard deviation of the models'
    force vectors; ``max_force_deviation``, its largest value; ``energy_deviation`` eV, the
    standard deviation of their energies. A single model has none of them, and says so.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    COMMITTEE_PROPERTIES = ("force_deviation", "max_force_deviation", "energy_deviation")

    def __init__(
        self,
        path: PathLike,
        device: Optional[str] = None,
        species_to_type_map: Optional[Mapping[str, str]] = None,
        energy_units_to_eV: float = 1.0,
        length_units_to_A: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.energy_units_to_eV = _unit_factor("energy_units_to_eV", energy_units_to_eV, "eV", "0.0433641 for kcal/mol")
        self.length_units_to_A = _unit_factor("length_units_to_A", length_units_to_A, "Å", "0.529177 for bohr")
        self.path = Path(path)
        self.model = open_model(self.path, device)
        self.type_mapper = TypeMapper(self.model.type_names, species_to_type_map)
        self._warn_dense_cell = WarnOnceAboutDenseCells()
        if self.model.committee_size > 1:
            self.implemented_properties = self.implemented_properties + list(self.COMMITTEE_PROPERTIES)

    def get_property(self, name: str, atoms: Optional[Atoms] = None, allow_calculation: bool = True):
        if name in self.COMMITTEE_PROPERTIES and self.model.committee_size == 1:
            raise PropertyNotImplementedError(
                f"{name} is the deviation of a committee of models, and {self.path} is one model: compile "
                "several independently trained models into one file (nequip-compile a.nequip.zip "
                "b.nequip.zip ... committee.nequip.pt2) and use that"
            )
        return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self,
        atoms: Optional[Atoms] = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if len(atoms) == 0:
            raise ValueError("the Atoms object has no atoms: nothing to compute")
        if not np.isfinite(atoms.positions).all():
            raise ValueError("the Atoms object has NaN or infinite positions")
        atom_types = self._atom_types(atoms)
        _check_periodic_cell(atoms)
        has_volume = bool(atoms.pbc.any()) and atoms.cell.rank == 3
        if "stress" in properties:
            self._check_stress_available(atoms, has_volume)

        # The model works in its own units: positions and cell in model lengths.
        pos = atoms.positions / self.length_units_to_A
        cell = atoms.cell.array / self.length_units_to_A
        edge_index, edge_cell_shift = compute_neighbor_list(
            pos,
            cell,
            atoms.pbc,
            self.model.r_max,
            atom_types=atom_types,
            per_edge_type_cutoff=self.model.per_edge_type_cutoff,
            on_dense_cell=self._warn_dense_cell,
        )
        frame = {
            keys.POS: torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float64)),
            keys.ATOM_TYPES: torch.from_numpy(atom_types),
            keys.EDGE_INDEX: torch.from_numpy(edge_index),
            keys.EDGE_CELL_SHIFT: torch.from_numpy(edge_cell_shift),
            keys.CELL: torch.from_numpy(np.ascontiguousarray(cell, dtype=np.float64)).reshape(1, 3, 3),
        }
        out = {key: value.numpy() for key, value in self.model(frame).items()}

        energy, length = self.energy_units_to_eV, self.length_units_to_A
        total_energy = float(out[keys.TOTAL_ENERGY].reshape(())) * energy
        self.results = {
            "energy": total_energy,
            "free_energy": total_energy,
            "energies": out[keys.ATOMIC_ENERGY].reshape(-1) * energy,
            "forces": out[keys.FORCES] * (energy / length),
        }
        if keys.FORCE_DEVIATION in out:  # a committee's
            force_deviation = out[keys.FORCE_DEVIATION].reshape(-1) * (energy / length)
            self.results["force_deviation"] = force_deviation
            self.results["max_force_deviation"] = float(force_deviation.max())
            self.results["energy_deviation"] = float(out[keys.ENERGY_DEVIATION].reshape(())) * energy
        if has_volume and keys.STRESS in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out[keys.STRESS].reshape(3, 3)) * (energy / length**3)

    def _atom_types(self, atoms: Atoms) -> np.ndarray:
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - self.type_mapper.species_to_index.keys())
        if unknown:
            raise ValueError(
                f"species {', '.join(unknown)} not in the model: its types are "
                f"{', '.join(self.model.type_names)}; map species to types with species_to_type_map"
            )
        return self.type_mapper(symbols)

    def _check_stress_available(self, atoms: Atoms, has_volume: bool) -> None:
        if not atoms.pbc.any():
            raise PropertyNotImplementedError("stress is not available: the system is not periodic")
        if not has_volume:
            raise PropertyNotImplementedError("stress is not available: the cell has no volume")
        if not self.model.gives_stress:
            raise PropertyNotImplementedError(
                f"stress is not available: {self.path} returns neither stress nor virial "
                f"(its outputs: {' '.join(self.model.outputs)})"
            )


def _check_periodic_cell(atoms: Atoms) -> None:
    """The lattice vectors of the periodic axes must span a volume (an area, a length) of their
    own: periodic images along a zero or dependent vector do not exist."""
    periodic = atoms.pbc
    if periodic.any() and np.linalg.matrix_rank(atoms.cell.array[periodic]) < periodic.sum():
        lengths = ", ".join(f"{length:g}" for length in atoms.cell.lengths())
        raise ValueError(
            f"the cell has no volume along its periodic axes (pbc={periodic.tolist()}, cell lengths "
            f"{lengths} A): set the cell (atoms.set_cell), or set pbc=False along the axes that "
            "are not periodic"
        )


def _unit_factor(name: str, value, unit: str, example: str) -> float:
    """A units argument as a positive, finite float: how many eV (Å) one model unit is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} must be a positive number, how many {unit} one unit of the model is "
            f"(e.g. {example}), got {value!r}"
        )
    return float(value)
