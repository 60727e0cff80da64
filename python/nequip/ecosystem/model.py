"""A model of the other NequIP release, presented as this project's eager model.

The other release (nequip 0.19.x) builds every model as ``GraphModel(ForceStressOutput(energy
network))``: the energy network maps an atomic data dictionary to per-atom energies
(``atomic_energy``, (N, 1), float64), and ``ForceStressOutput`` differentiates their sum by the
positions and a symmetric strain. :class:`EcosystemModel` runs that energy network, from the
code the package interned, on edge vectors it forms itself, and takes forces, virial, stress and
per-atom virials from the gradient by those edge vectors exactly as :class:`nequip.model.NequIPModel`
does (:func:`nequip.model.nequip_model.energy_derivatives`). The same derivatives, arranged by
edge, give the per-atom virials and the local-atom energy sums that LAMMPS on several ranks
needs and that the other release's output module does not give.

To every caller it looks like :class:`nequip.model.NequIPModel`: ``forward(dict) -> dict`` on
FILE_CONTRACT §1 inputs and outputs (float64; one frame or a batch), ``metadata()`` (§2 strings),
``type_names``, ``r_max``, ``config`` (what is known of its hyperparameters: ``type_names``,
``r_max``, ``per_edge_type_cutoff``, ``model_dtype``, ``num_layers``; not arguments of
NequIPModel), ``edge_type_cutoff`` and the ``compute_forces`` / ``compute_stress`` flags.
"""

from typing import Dict, List, Optional

import torch

from nequip import __version__
from nequip.data import keys
from nequip.model.nequip_model import edge_vectors, energy_derivatives

# the other release's names (its AtomicDataDict keys), where they differ from ours or are its own
EDGE_VECTORS = "edge_vectors"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class EcosystemModelError(ValueError):
    """A model of the other release that this project cannot run."""


def graph_model_of(loaded) -> torch.nn.Module:
    """The other release's ``GraphModel`` in what its package stores (in 0.19.x a ``ModuleDict``
    whose one entry ``sole_model`` is the model; in older releases the model itself)."""
    if isinstance(loaded, torch.nn.ModuleDict) and "sole_model" in loaded:
        loaded = loaded["sole_model"]
    if not getattr(loaded, "is_graph_model", False):
        raise EcosystemModelError(
            f"its model is a {type(loaded).__name__}, not the other NequIP release's GraphModel"
        )
    return loaded


class EcosystemModel(torch.nn.Module):
    """The other release's ``GraphModel`` behind this project's eager-model interface.

    Args:
        graph_model: the other release's model (``GraphModel`` around ``ForceStressOutput``),
            its classes from the package's own code.
        made_by: the release that made it (e.g. ``"nequip 0.19.1"``), recorded in the metadata.
    """

    def __init__(self, graph_model: torch.nn.Module, made_by: str):
        super().__init__()
        output = getattr(graph_model, "model", None)
        if type(output).__name__ != "ForceStressOutput" or not isinstance(getattr(output, "func", None), torch.nn.Module):
            raise EcosystemModelError(
                f"its GraphModel wraps a {type(output).__name__}, not the ForceStressOutput around an energy "
                "network that this nequip knows how to run"
            )
        self.graph_model = graph_model
        stored = dict(graph_model.metadata)
        try:
            type_names: List[str] = stored["type_names"].split(" ")
            r_max = float(stored["r_max"])
            model_dtype = stored["model_dtype"]
            cutoffs = stored.get("per_edge_type_cutoff")
            flat_cutoffs = None if cutoffs is None else [float(word) for word in cutoffs.split(" ")]
        except (KeyError, ValueError) as error:
            raise EcosystemModelError(f"its model metadata {stored} lacks or garbles a key ({error})") from None
        if model_dtype not in _DTYPES:
            raise EcosystemModelError(f"its model_dtype {model_dtype!r} is neither float32 nor float64")
        num_types = len(type_names)
        if flat_cutoffs is not None and len(flat_cutoffs) != num_types**2:
            raise EcosystemModelError(f"its per_edge_type_cutoff has {len(flat_cutoffs)} values, not {num_types}²")
        self.type_names: List[str] = type_names
        self.num_types = num_types
        self.r_max = r_max
        self.model_dtype = _DTYPES[model_dtype]
        self.made_by = made_by
        self.compute_forces = True
        self.compute_stress = True
        self.register_buffer(
            "edge_type_cutoff",
            torch.tensor(flat_cutoffs or [r_max] * num_types**2, dtype=torch.float64).view(num_types, num_types),
        )
        self.layer_names: List[str] = message_passing_layers(self.energy_network)
        self.config = dict(
            type_names=type_names,
            r_max=r_max,
            per_edge_type_cutoff=flat_cutoffs,
            model_dtype=model_dtype,
            num_layers=len(self.layer_names),
        )
        self._stored_metadata = stored

    @property
    def energy_network(self) -> torch.nn.Module:
        """The other release's energy network: atomic data dictionary -> ``atomic_energy``."""
        return self.graph_model.model.func

    def metadata(self) -> Dict[str, str]:
        """Model metadata, every value an ASCII string (FILE_CONTRACT §2), as the other release
        states it, with this project's ``allow_tf32`` and ``num_layers`` (message-passing layers;
        an atom's energy depends on atoms within ``num_layers * r_max``)."""
        metadata = {
            "model_dtype": self._stored_metadata["model_dtype"],
            "type_names": " ".join(self.type_names),
            "num_types": str(self.num_types),
            "r_max": repr(self.r_max),
            "allow_tf32": "0",
            "nequip_version": __version__,
            "model_made_by": self.made_by,
        }
        if self.layer_names:
            metadata["num_layers"] = str(len(self.layer_names))
        if self.config["per_edge_type_cutoff"] is not None:
            metadata["per_edge_type_cutoff"] = " ".join(repr(c) for c in self.config["per_edge_type_cutoff"])
        return metadata

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Energies and their derivatives for one frame or a batch of frames (FILE_CONTRACT §1),
        as :meth:`nequip.model.NequIPModel.forward` gives them (``local_mask`` included)."""
        out = data.copy()
        pos = data[keys.POS]
        if keys.BATCH in data:
            batch = data[keys.BATCH]
            num_frames = data[keys.NUM_ATOMS].shape[0]
        else:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            num_frames = 1
        if keys.CELL in data:
            cell = data[keys.CELL].view(-1, 3, 3)
        else:
            cell = torch.zeros((num_frames, 3, 3), dtype=pos.dtype, device=pos.device)
        edge_index = data[keys.EDGE_INDEX]
        edge_vec = edge_vectors(pos, cell, edge_index, data.get(keys.EDGE_CELL_SHIFT), batch)
        with torch.enable_grad():
            edge_vec = edge_vec.detach().requires_grad_(self.compute_forces or self.compute_stress)
            atomic_energy = self.atomic_energy(pos, data[keys.ATOM_TYPES], edge_index, edge_vec, data)
            results = energy_derivatives(
                atomic_energy,
                edge_vec,
                cell,
                edge_index,
                batch,
                num_frames,
                data.get(keys.LOCAL_MASK),
                self.compute_forces,
                self.compute_stress,
                self.training,
            )
        atomic_energy, total_energy, forces, virial, stress, atom_virial = results
        out[keys.ATOMIC_ENERGY] = atomic_energy
        out[keys.TOTAL_ENERGY] = total_energy
        if forces is not None:
            out[keys.FORCES] = forces
        if virial is not None:
            out[keys.VIRIAL] = virial
            out[keys.STRESS] = stress
            out[keys.ATOM_VIRIAL] = atom_virial
        return out

    def atomic_energy(
        self,
        pos: torch.Tensor,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        data: Optional[Dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Per-atom energies (N, 1), float64: the other release's energy network on the edge
        vectors (E, 3), float64 (the batch keys of ``data`` passed on when present)."""
        inputs = {
            keys.POS: pos,
            keys.ATOM_TYPES: atom_types,
            # its code views the edge index as stored, as its own neighbour lists are
            keys.EDGE_INDEX: edge_index.contiguous(),
            EDGE_VECTORS: edge_vec,
        }
        if data is not None and keys.BATCH in data:
            inputs[keys.BATCH] = data[keys.BATCH]
            inputs[keys.NUM_ATOMS] = data[keys.NUM_ATOMS]
        return self.energy_network(inputs)[keys.ATOMIC_ENERGY].to(torch.float64)


def message_passing_layers(energy_network: torch.nn.Module) -> List[str]:
    """Names of the other release's message-passing layers (``ConvNetLayer``) in its energy
    network, in order; empty for an architecture without them (e.g. Allegro)."""
    return [name for name, module in energy_network.named_children() if type(module).__name__ == "ConvNetLayer"]
