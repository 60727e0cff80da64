"""A NequIP model as a TorchSim model (PyPI ``torch-sim-atomistic``): relaxations, MD and single
points of many systems at once, the systems of TorchSim's batch evaluated together (on a GPU
in one model call; on a CPU in calls of a few hundred atoms, see ``NequIPModel``).

    import torch_sim as ts
    from nequip.integrations.torchsim import NequIPModel

    model = NequIPModel("model.nequip.pt2")   # --target batch; or .nequip.pth, .nequip.zip, .ckpt
    results = ts.static([atoms_1, atoms_2, ...], model)

Any model file works, opened by :func:`nequip.inference.open_model`: a compiled file of target
``batch`` or a ``.nequip.pth`` evaluates the whole batch in one call of the C++ runtime, a
package or checkpoint in one call of the eager model; a compiled file of another target goes
one system at a time (correct, but without what batching gains).
"""

from typing import Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from ase.data import chemical_symbols

try:
    from torch_sim.models.interface import ModelInterface
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "nequip.integrations.torchsim needs TorchSim: pip install 'nequip[torchsim]' "
        "(PyPI torch-sim-atomistic, Python >= 3.11)"
    ) from error

from nequip.data import TypeMapper, WarnOnceAboutDenseCells, compute_neighbor_list, keys
from nequip.inference import open_model
from nequip.inference.opened import PathLike

# On a CPU a call's time per atom grows with its size (the benchmark model's batch .pt2, one
# thread, Xeon Sapphire Rapids: 884 µs/atom at 64 atoms, 950-1010 at 512, 1250 at 4096), as
# its per-edge buffers outgrow the caches; the call overhead that batching saves is small
# beside it. So on a CPU the batch goes in calls of at most this many atoms (docs/torchsim.md).
CPU_ATOMS_PER_CALL = 256


class NequIPModel(ModelInterface):
    """TorchSim's ``ModelInterface`` for a NequIP model file.

    Args:
        path: a compiled model (``*.nequip.pt2`` of target ``batch``, or any ``*.nequip.pth``,
            for one runtime call per batch), a package (``*.nequip.zip``) or a checkpoint
            (``*.ckpt``).
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:k"``); by default a
            compiled file's own device, the CPU for a package or checkpoint.
        species_to_type_map: chemical symbol -> model type name; by default each type name is
            the chemical symbol it stands for.
        dtype: the dtype of TorchSim's states and of the outputs (the model's inputs and
            outputs are float64 whatever this is).
        compute_stress: give each system's stress (default: whenever the file gives it).
        max_atoms_per_call: the most atoms of one model call (a system larger goes alone);
            by default the whole batch on a GPU, ``CPU_ATOMS_PER_CALL`` on a CPU.

    A call takes a ``SimState`` (or TorchSim's state dictionary) and returns ``energy`` (S,),
    ``forces`` (N, 3) and ``stress`` (S, 3, 3) (ASE sign; NaN for a system without a cell
    volume, as ``NequIPCalculator`` has none for it), in eV and Å as TorchSim's: the model's
    own units must be those. Neighbor lists are built per system on the CPU
    (:func:`nequip.data.compute_neighbor_list`, vesin), as for ``NequIPCalculator``, whose
    results each system's equal.

    ``memory_scales_with`` is ``"n_atoms_x_density"``: a call's memory grows with the number
    of edges (per-edge intermediates of the force pass), which for a cutoff radius is the
    number of atoms times their density; TorchSim's autobatchers size batches by it.
    """

    def __init__(
        self,
        path: PathLike,
        device: Optional[str] = None,
        *,
        species_to_type_map: Optional[Mapping[str, str]] = None,
        dtype: torch.dtype = torch.float64,
        compute_stress: Optional[bool] = None,
        max_atoms_per_call: Optional[int] = None,
    ):
        super().__init__()
        if max_atoms_per_call is not None and max_atoms_per_call < 1:
            raise ValueError(f"max_atoms_per_call must be at least 1, not {max_atoms_per_call}")
        self.model = open_model(path, device)
        if compute_stress and not self.model.gives_stress:
            raise ValueError(
                f"compute_stress: {self.model.path} gives no stress (compile it with --target batch, "
                "or use a .nequip.pth, package or checkpoint)"
            )
        self._device = torch.device(self.model.device)
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = self.model.gives_stress if compute_stress is None else bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        if max_atoms_per_call is None and self._device.type == "cpu":
            max_atoms_per_call = CPU_ATOMS_PER_CALL
        self.max_atoms_per_call = max_atoms_per_call
        self.type_mapper = TypeMapper(
            self.model.type_names, species_to_type_map, remedy="map each species to one with species_to_type_map"
        )
        self._warn_dense_cell = WarnOnceAboutDenseCells()

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        """Energy (S,), forces (N, 3) and (``compute_stress``) stress (S, 3, 3) of every system
        of ``state`` (a ``SimState`` or a dict of its fields), in calls of at most
        ``max_atoms_per_call`` atoms."""
        if isinstance(state, Mapping):
            positions, cell = state["positions"], state["cell"].mT
            system_idx, atomic_numbers, pbc = state["system_idx"], state["atomic_numbers"], state["pbc"]
        else:
            positions, cell = state.positions, state.row_vector_cell
            system_idx, atomic_numbers, pbc = state.system_idx, state.atomic_numbers, state.pbc
        frames, order = self._frames(positions, cell, system_idx, atomic_numbers, _periodic_axes(pbc))
        outputs = []
        for group in _groups_of_atoms(frames, self.max_atoms_per_call):
            outputs.extend(self.model.evaluate(group, batch_size=len(group)))

        forces = torch.cat([out[keys.FORCES] for out in outputs])
        if order is not None:  # back to the state's order of atoms
            forces = torch.empty_like(forces).index_copy_(0, order, forces)
        results = {
            "energy": torch.cat([out[keys.TOTAL_ENERGY].reshape(1) for out in outputs]),
            "forces": forces,
        }
        if self._compute_stress:
            nan = torch.full((1, 3, 3), float("nan"), dtype=torch.float64)
            results["stress"] = torch.cat([out.get(keys.STRESS, nan) for out in outputs])
        return {name: value.to(self._device, self._dtype) for name, value in results.items()}

    def _frames(self, positions, cell, system_idx, atomic_numbers, pbc: np.ndarray):
        """One FILE_CONTRACT §1 frame per system (neighbor lists included), and the order of
        the state's atoms that puts each system's together (None when they already are)."""
        system_idx = system_idx.detach().cpu()
        order = None
        if system_idx.numel() > 1 and bool((system_idx[1:] < system_idx[:-1]).any()):
            order = torch.argsort(system_idx, stable=True)
            system_idx = system_idx[order]
        positions = positions.detach().to("cpu", torch.float64)
        atomic_numbers = atomic_numbers.detach().cpu()
        if order is not None:
            positions, atomic_numbers = positions[order], atomic_numbers[order]
        all_types = self._atom_types(atomic_numbers.numpy())
        all_pos = positions.numpy()
        cells = cell.detach().to("cpu", torch.float64).numpy().reshape(-1, 3, 3)
        counts = torch.bincount(system_idx, minlength=cells.shape[0]).tolist()
        frames: List[Dict[str, torch.Tensor]] = []
        first = 0
        for system, count in enumerate(counts):
            pos, atom_types = all_pos[first : first + count], all_types[first : first + count]
            first += count
            if count == 0:
                raise ValueError(f"system {system} of the state has no atoms: nothing to compute")
            system_cell = cells[system]
            edge_index, edge_cell_shift = compute_neighbor_list(
                pos,
                system_cell,
                pbc,
                self.model.r_max,
                atom_types=atom_types,
                per_edge_type_cutoff=self.model.per_edge_type_cutoff,
                on_dense_cell=self._warn_dense_cell,
            )
            # as NequIPCalculator: the cell of a system that is periodic along no axis does not
            # enter the model (it has no stress)
            model_cell = system_cell if pbc.any() else np.zeros((3, 3))
            frames.append(
                {
                    keys.POS: torch.from_numpy(np.ascontiguousarray(pos)),
                    keys.ATOM_TYPES: torch.from_numpy(atom_types),
                    keys.EDGE_INDEX: torch.from_numpy(edge_index),
                    keys.EDGE_CELL_SHIFT: torch.from_numpy(edge_cell_shift),
                    keys.CELL: torch.from_numpy(np.ascontiguousarray(model_cell)).reshape(1, 3, 3),
                }
            )
        return frames, order

    def _atom_types(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """(N,) model types of atomic numbers (ValueError naming an unknown species)."""
        numbers, inverse = np.unique(atomic_numbers, return_inverse=True)
        bad = [int(z) for z in numbers if not 0 < z < len(chemical_symbols)]
        if bad:
            raise ValueError(f"atomic numbers {bad} are not chemical elements (1-{len(chemical_symbols) - 1})")
        return self.type_mapper([chemical_symbols[z] for z in numbers])[inverse.reshape(-1)]


def _groups_of_atoms(frames: List[Dict[str, torch.Tensor]], max_atoms: Optional[int]):
    """``frames`` in order, in groups of at most ``max_atoms`` atoms (all in one without a
    limit; a frame larger than the limit in a group of its own)."""
    if max_atoms is None:
        return [frames] if frames else []
    groups: List[List[Dict[str, torch.Tensor]]] = []
    atoms = 0
    for frame in frames:
        count = frame[keys.POS].shape[0]
        if not groups or atoms + count > max_atoms:
            groups.append([])
            atoms = 0
        groups[-1].append(frame)
        atoms += count
    return groups


def _periodic_axes(pbc: Union[bool, List[bool], torch.Tensor]) -> np.ndarray:
    """TorchSim's pbc (0.3: one bool for all axes; later: three) as three bools."""
    if isinstance(pbc, torch.Tensor):
        pbc = pbc.detach().cpu().numpy()
    return np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()


__all__ = ["NequIPModel"]
