"""ASE calculator for NequIP models: compiled files run on the C++ runtime, checkpoints and
packages on the eager model.

    from nequip.ase import NequIPCalculator
    atoms.calc = NequIPCalculator("model.nequip.pt2")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
"""

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from nequip.data import TypeMapper, compute_neighbor_list

PathLike = Union[str, Path]

COMPILED_SUFFIXES = (".pth", ".pt2")  # *.nequip.pth (TorchScript), *.nequip.pt2 (AOTInductor)
EAGER_SUFFIXES = (".nequip.zip", ".ckpt")  # package, Lightning checkpoint


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
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

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
        from nequip.load import resolve_model_path

        self.path = resolve_model_path(path)  # a nequip.net ID: its package, downloaded once
        self.model = _open_model(self.path, device)
        self.type_mapper = TypeMapper(self.model.type_names, species_to_type_map)
        self.energy_units_to_eV = float(energy_units_to_eV)
        self.length_units_to_A = float(length_units_to_A)

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
        )
        out = self.model(pos, atom_types, edge_index, edge_cell_shift, cell)

        energy, length = self.energy_units_to_eV, self.length_units_to_A
        self.results = {
            "energy": out["total_energy"] * energy,
            "free_energy": out["total_energy"] * energy,
            "energies": out["atomic_energy"] * energy,
            "forces": out["forces"] * (energy / length),
        }
        if has_volume and "stress" in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"]) * (energy / length**3)

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
                f"(its outputs: {' '.join(self.model.output_names)})"
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


def _open_model(path: Path, device: Optional[str]):
    name = path.name
    if name.endswith(COMPILED_SUFFIXES):
        return _CompiledModel(path, device)
    if name.endswith(EAGER_SUFFIXES):
        return _EagerModel(path, device)
    raise ValueError(
        f"{path}: not a NequIP model file: expected a compiled model (.nequip.pth, "
        ".nequip.pt2), a package (.nequip.zip) or a checkpoint (.ckpt)"
    )


class _CompiledModel:
    """A ``.nequip.pth`` / ``.nequip.pt2`` file on the C++ runtime."""

    def __init__(self, path: Path, device: Optional[str]):
        from nequip import _runtime

        self._model = _runtime.Model(str(path), device)
        self.type_names = list(self._model.type_names)
        self.r_max = self._model.r_max
        self.per_edge_type_cutoff = self._model.per_edge_type_cutoff
        self.output_names = list(self._model.output_names)
        self.gives_stress = "stress" in self.output_names or "virial" in self.output_names

    def __call__(self, pos, atom_types, edge_index, edge_cell_shift, cell) -> Dict[str, np.ndarray]:
        return self._model.compute(pos, atom_types, edge_index, edge_cell_shift, cell)


class _EagerModel:
    """The eager ``NequIPModel`` of a package or checkpoint, called like the runtime."""

    output_names = ("atomic_energy", "total_energy", "forces", "stress", "virial")
    gives_stress = True

    def __init__(self, path: Path, device: Optional[str]):
        import torch

        from nequip.package import load_model

        self._torch = torch
        from nequip.utils.devices import torch_device

        self._device = torch_device(device or "cpu")
        self._model = load_model(path).to(self._device).eval()
        self._model.compute_forces = True
        self._model.compute_stress = True
        self.type_names = list(self._model.type_names)
        self.r_max = float(self._model.r_max)
        cutoffs = self._model.config["per_edge_type_cutoff"]
        num_types = len(self.type_names)
        self.per_edge_type_cutoff = None if cutoffs is None else np.reshape(cutoffs, (num_types, num_types))

    def __call__(self, pos, atom_types, edge_index, edge_cell_shift, cell) -> Dict[str, np.ndarray]:
        torch = self._torch

        def tensor(array: np.ndarray, dtype) -> "torch.Tensor":
            return torch.as_tensor(array, dtype=dtype, device=self._device)

        data = {
            "pos": tensor(pos, torch.float64),
            "atom_types": tensor(atom_types, torch.int64),
            "edge_index": tensor(edge_index, torch.int64),
            "edge_cell_shift": tensor(edge_cell_shift, torch.float64),
            "cell": tensor(cell, torch.float64).reshape(1, 3, 3),
        }
        with torch.enable_grad():  # forces and stress are autograd derivatives
            out = self._model(data)
        return {
            "total_energy": float(out["total_energy"].detach().sum()),
            "atomic_energy": out["atomic_energy"].detach().cpu().numpy().reshape(-1),
            "forces": out["forces"].detach().cpu().numpy(),
            "stress": out["stress"].detach().cpu().numpy().reshape(3, 3),
        }
