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

from typing import Dict, Final, List, Optional, Tuple

import torch

from nequip import __version__
from nequip.data import keys
from nequip.model.nequip_model import Energies, edge_vectors, energy_derivatives, frame_geometry, with_energies

# the other release's names (its AtomicDataDict keys), where they differ from ours or are its own
EDGE_VECTORS: Final[str] = "edge_vectors"

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

    # Python-side only: TorchScript compiles forward (a .nequip.pth runs the whole model) and
    # leaves these; the layer-by-layer parts are traced into .nequip.pt2 files instead.
    __jit_unused_properties__ = ["energy_network", "layers", "_edge_module_names", "_readout_module_names"]
    torchscript_layer_parts = False

    def __init__(self, graph_model: torch.nn.Module, made_by: str):
        super().__init__()
        output = getattr(graph_model, "model", None)
        if type(output).__name__ != "ForceStressOutput" or not isinstance(getattr(output, "func", None), torch.nn.Module):
            raise EcosystemModelError(
                f"its GraphModel wraps a {type(output).__name__}, not the ForceStressOutput around an energy "
                "network that this nequip knows how to run"
            )
        embeds_fields = [name for name, module in graph_model.named_modules() if getattr(module, "do_categorical_graph_field_embed", False)]
        if embeds_fields:
            raise EcosystemModelError(
                f"its type embedding ({embeds_fields[0]}) also embeds per-frame fields (such as a charge or spin "
                "state), which this nequip does not give a model"
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
        self.split_problem: Optional[str] = layer_split_problem(self.energy_network)
        """Why the model cannot run layer by layer (target pair_nequip_domain), or None."""

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
        if self.split_problem is None:
            # node features out of each layer: what LAMMPS ranks exchange between layers
            metadata["layer_feature_widths"] = " ".join(
                str(layer.irreps_out[NODE_FEATURES].dim) for layer in self.layers
            )
            metadata["layer_rows"] = "selected"
        if self.config["per_edge_type_cutoff"] is not None:
            metadata["per_edge_type_cutoff"] = " ".join(repr(c) for c in self.config["per_edge_type_cutoff"])
        return metadata

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Energies and their derivatives for one frame or a batch of frames (FILE_CONTRACT §1),
        as :meth:`nequip.model.NequIPModel.forward` gives them (``local_mask`` included)."""
        batch, num_frames, cell, edge_vec, local_mask = frame_geometry(data)
        if torch.jit.is_scripting():
            # TorchScript has no enable_grad; compiled models run with grad mode on
            energies = self._energy_and_derivatives(data, edge_vec, cell, batch, num_frames, local_mask)
        else:
            # validation and inference may run under no_grad: derivatives need the graph regardless
            with torch.enable_grad():
                energies = self._energy_and_derivatives(data, edge_vec, cell, batch, num_frames, local_mask)
        return with_energies(data.copy(), energies)

    def _energy_and_derivatives(
        self,
        data: Dict[str, torch.Tensor],
        edge_vec: torch.Tensor,
        cell: torch.Tensor,
        batch: torch.Tensor,
        num_frames: int,
        local_mask: Optional[torch.Tensor],
    ) -> Energies:
        edge_index = data[keys.EDGE_INDEX]
        edge_vec = edge_vec.detach().requires_grad_(self.compute_forces or self.compute_stress)
        atomic_energy = self.atomic_energy(data[keys.POS], data[keys.ATOM_TYPES], edge_index, edge_vec, data)
        return energy_derivatives(
            atomic_energy,
            edge_vec,
            cell,
            edge_index,
            batch,
            num_frames,
            local_mask,
            self.compute_forces,
            self.compute_stress,
            self.training,
        )

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
            # its code views the edge index as stored, as its own neighbor lists are
            keys.EDGE_INDEX: edge_index.contiguous(),
            "edge_vectors": edge_vec,  # EDGE_VECTORS (TorchScript takes no global strings)
        }
        if data is not None and keys.BATCH in data:
            inputs[keys.BATCH] = data[keys.BATCH]
            inputs[keys.NUM_ATOMS] = data[keys.NUM_ATOMS]
        return self.graph_model.model.func(inputs)[keys.ATOMIC_ENERGY].to(torch.float64)

    # -- the parts of atomic_energy, for LAMMPS on several ranks (target pair_nequip_domain) ----
    #
    # The same parts as NequIPModel's (nequip.compile.aotinductor.part_names), with the same
    # shapes: node rows are the N atoms and then one reference atom of each type, without
    # edges (the runtime never exchanges them; energy_readout drops them). The other release's
    # layers read the atom types (per-type neighbor normalisation) beside the type embedding:
    # node_attrs is the embedding with the types as its last column.

    @property
    def layers(self) -> List[torch.nn.Module]:
        """The message-passing layers, in order (ValueError where the model cannot be split)."""
        if self.split_problem is not None:
            raise ValueError(
                f"this model of {self.made_by} cannot be split at its message-passing layers (target "
                f"pair_nequip_domain, LAMMPS on several ranks): {self.split_problem}; compile it for one rank instead: "
                "--target pair_nequip or ase (.nequip.pt2), or --mode torchscript (.nequip.pth)"
            )
        return [getattr(self.energy_network, name) for name in self.layer_names]

    def edge_vectors(self, pos, cell, edge_index, edge_cell_shift: Optional[torch.Tensor], batch) -> torch.Tensor:
        """Edge vectors (E, 3), float64 (:func:`nequip.model.nequip_model.edge_vectors`)."""
        return edge_vectors(pos, cell, edge_index, edge_cell_shift, batch)

    def node_attributes(self, atom_types: torch.Tensor) -> torch.Tensor:
        """(N + num_types, embedding width + 1): the other release's type embedding of the atoms
        and of one reference atom per type, and the types (last column, as numbers)."""
        all_types = torch.cat([atom_types, torch.arange(self.num_types, device=atom_types.device)])
        embedded = self._module(NODE_EMBEDDING)({keys.ATOM_TYPES: all_types})[NODE_ATTRS]
        return torch.cat([embedded, all_types.to(embedded.dtype).unsqueeze(-1)], dim=1)

    def node_embedding(self, node_attrs: torch.Tensor) -> torch.Tensor:
        """The features before the first layer: the type embedding (contiguous: compiled parts
        read their inputs as dense rows)."""
        return node_attrs[:, :-1].contiguous()

    def edge_embedding(
        self, edge_vec: torch.Tensor, atom_types: torch.Tensor, edge_index: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Edge harmonics and radial embedding (the other release's ``edge_attrs`` and
        ``edge_embedding``) from the edge vectors (E, 3), float64."""
        data = {keys.ATOM_TYPES: atom_types, keys.EDGE_INDEX: edge_index.contiguous(), EDGE_VECTORS: edge_vec}
        for name in self._edge_module_names:
            data = getattr(self.energy_network, name)(data)
        return data[EDGE_ATTRS].contiguous(), data[EDGE_EMBEDDING].contiguous()

    def layer(
        self,
        index: int,
        x: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_index: torch.Tensor,
        rows: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Layer ``index`` on the node features x (N + num_types rows): the output of every node,
        or of the nodes ``rows`` (as NequIPModel.layer; the other release's layer computes
        every node's, these are taken from it)."""
        data = {
            # its layers count the nodes by the positions' rows; only the count is read
            keys.POS: torch.zeros((x.shape[0], 3), dtype=torch.float64, device=x.device),
            keys.ATOM_TYPES: node_attrs[:, -1].to(torch.long),
            NODE_ATTRS: node_attrs[:, :-1].contiguous(),
            NODE_FEATURES: x,
            EDGE_ATTRS: edge_sh,
            EDGE_EMBEDDING: edge_radial,
            keys.EDGE_INDEX: edge_index.contiguous(),
        }
        out = self.layers[index](data)[NODE_FEATURES]
        return (out if rows is None else out.index_select(0, rows)).contiguous()

    def energy_readout(self, x: torch.Tensor, atom_types: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N, 1), float64, from the last layer's features (N + num_types rows)."""
        num_atoms = atom_types.shape[0]
        data = {keys.POS: torch.zeros((num_atoms, 3), dtype=torch.float64, device=x.device),
                keys.ATOM_TYPES: atom_types, NODE_FEATURES: x[:num_atoms]}  # fmt: skip
        for name in self._readout_module_names:
            data = getattr(self.energy_network, name)(data)
        return data[keys.ATOMIC_ENERGY].to(torch.float64)

    def _module(self, kind: str) -> torch.nn.Module:
        (name,) = [name for name, module in self.energy_network.named_children() if _KINDS.get(type(module).__name__) == kind]
        return getattr(self.energy_network, name)

    @property
    def _edge_module_names(self) -> List[str]:
        return _names_of(self.energy_network, EDGE_EMBEDDING)

    @property
    def _readout_module_names(self) -> List[str]:
        return _names_of(self.energy_network, READOUT)


# the other release's dictionary keys of the intermediate fields (its AtomicDataDict)
NODE_ATTRS = "node_attrs"
NODE_FEATURES = "node_features"
EDGE_ATTRS = "edge_attrs"
EDGE_EMBEDDING = "edge_embedding"

# What each module of its NequIP energy network (NequIPGNNModel) does, by class: the order of
# the network is node embedding, edge embedding, layers, readout, then the energy sum (which the
# derivatives' own sum replaces).
NODE_EMBEDDING, LAYER, READOUT, ENERGY_SUM = "node embedding", "layer", "readout", "energy sum"
_KINDS = {
    "NodeTypeEmbed": NODE_EMBEDDING,
    "SphericalHarmonicEdgeAttrs": EDGE_EMBEDDING,
    "EdgeLengthNormalizer": EDGE_EMBEDDING,
    "BesselEdgeLengthEncoding": EDGE_EMBEDDING,
    "ApplyFactor": EDGE_EMBEDDING,
    "ConvNetLayer": LAYER,
    "ScalarMLP": READOUT,
    "PerTypeScaleShift": READOUT,
    "AtomwiseReduce": ENERGY_SUM,
}
_ORDER = (NODE_EMBEDDING, EDGE_EMBEDDING, LAYER, READOUT, ENERGY_SUM)


def _names_of(network: torch.nn.Module, kind: str) -> List[str]:
    return [name for name, module in network.named_children() if _KINDS.get(type(module).__name__) == kind]


def layer_split_problem(network: torch.nn.Module) -> Optional[str]:
    """None if ``network`` is the other release's NequIP energy network, module by module as
    :data:`_KINDS` knows them (node embedding, edge embedding, message-passing layers, readout,
    energy sum, in this order), which splits at its layers; otherwise why not."""
    children = list(network.named_children())
    unknown = [f"{name} ({type(module).__name__})" for name, module in children if type(module).__name__ not in _KINDS]
    if unknown:
        return f"its energy network has modules this nequip cannot place between message-passing layers: {', '.join(unknown)}"
    kinds = [_KINDS[type(module).__name__] for _, module in children]
    order = [_ORDER.index(kind) for kind in kinds]
    if order != sorted(order) or kinds.count(NODE_EMBEDDING) != 1 or LAYER not in kinds or ENERGY_SUM not in kinds:
        return "its energy network is not laid out as node embedding, edge embedding, message-passing layers, readout"
    embedding = getattr(network, _names_of(network, NODE_EMBEDDING)[0])
    if getattr(embedding, "do_categorical_graph_field_embed", False) or not getattr(embedding, "set_features", True):
        return "its type embedding also embeds per-frame fields or does not set the first features"
    return None


def message_passing_layers(energy_network: torch.nn.Module) -> List[str]:
    """Names of the other release's message-passing layers (``ConvNetLayer``) in its energy
    network, in order; empty for an architecture without them (e.g. Allegro)."""
    return [name for name, module in energy_network.named_children() if type(module).__name__ == "ConvNetLayer"]
