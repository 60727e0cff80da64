"""The NequIP model: per-atom energies from an equivariant message-passing network,
forces and stress as derivatives of their sum."""

import inspect
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from e3nn import o3

from .. import __version__
from ..data import keys
from ..nn import BesselBasis, ConvNetLayer, PolynomialCutoff
from ..nn.pair_potential import ZBL, check_zbl

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

PerType = Union[None, float, Sequence[float], Dict[str, float]]

# atomic_energy (N, 1), total_energy (F, 1), then forces (N, 3), virial (F, 3, 3), stress
# (F, 3, 3) and atom_virial (N, 3, 3), None when not asked for (energy_derivatives)
Energies = Tuple[
    torch.Tensor,
    torch.Tensor,
    Optional[torch.Tensor],
    Optional[torch.Tensor],
    Optional[torch.Tensor],
    Optional[torch.Tensor],
]


class NequIPModel(torch.nn.Module):
    r"""NequIP (Batzner et al., Nat. Commun. 13, 2453 (2022)).

    Per-atom energy :math:`E_i = \sigma_{t_i} (\epsilon(x_i) - \epsilon_{t_i}^{\mathrm{isolated}}) + \mu_{t_i}`,
    where :math:`\epsilon` is the readout of the final node features, :math:`\sigma` and :math:`\mu` are the
    per-type energy scales and shifts, and the readout of an atom of the same type with no neighbors is
    subtracted so that an isolated atom has exactly its type's shift as energy. Forces are
    :math:`-\partial E / \partial r`, the virial :math:`-\partial E / \partial \varepsilon` for a symmetric strain
    :math:`\varepsilon` applied to positions and cell, the stress :math:`\frac{1}{V} \partial E / \partial \varepsilon`.

    The network runs in ``model_dtype``; edge vectors are formed and energies summed in float64, and all
    inputs and outputs are float64 (FILE_CONTRACT §1). Hyperparameter names follow DESIGN.md;
    ``model.config`` holds them, resolved, so that ``NequIPModel(**model.config)`` rebuilds the model.

    Args:
        type_names: model type names, in type-index order.
        r_max: cutoff radius (Å).
        l_max: largest rotation order of features and edge harmonics.
        parity: features of both parities (O(3)) if True, only even ones (SO(3)) otherwise.
        num_layers: number of interaction (convolution) layers.
        num_features: channels per irrep of the hidden features.
        num_bessels: size of the radial Bessel basis.
        polynomial_cutoff_p: exponent ``p`` of the cutoff envelope.
        radial_mlp_depth, radial_mlp_width: hidden layers of the radial MLP that weights the tensor product.
        avg_num_neighbors: neighbor-sum normalisation (None: no normalisation).
        per_type_energy_shifts: :math:`\mu` per type (list in type order, dict by name, or one number).
        per_type_energy_scales: :math:`\sigma` per type (same forms).
        per_edge_type_cutoff: cutoff per (center type, neighbor type), each at most ``r_max``: a dict
            ``{center: r}`` or ``{center: {neighbor: r}}`` (missing pairs use ``r_max``), or
            ``num_types**2`` numbers in row-major order (row = center type).
        model_dtype: ``"float32"`` or ``"float64"``.
        zbl: add the ZBL screened nuclear repulsion (:mod:`nequip.nn.pair_potential`) to the
            learned energy: a dict of ``atomic_numbers`` (one per type) and ``inner_radius``,
            ``outer_radius`` (``num_types**2`` each, Å, row-major), as
            :func:`~nequip.model.build_model` resolves ``zbl: true`` or a partial mapping.
            Each edge's pair energy goes half to its center atom; the edge list holds both
            directions, so each pair's goes half to each of its atoms.
        closest_training_pair: the shortest distance between two atoms in the data the model was
            trained on (Å), a record (the ``closest_training_pair`` metadata key, against which the
            runtime warns about closer pairs); None when unknown. It does not change the model.
    """

    def __init__(
        self,
        type_names: Sequence[str],
        r_max: float,
        l_max: int = 1,
        parity: bool = True,
        num_layers: int = 3,
        num_features: int = 16,
        num_bessels: int = 8,
        polynomial_cutoff_p: float = 6.0,
        radial_mlp_depth: int = 2,
        radial_mlp_width: int = 64,
        avg_num_neighbors: Optional[float] = None,
        per_type_energy_shifts: PerType = None,
        per_type_energy_scales: PerType = None,
        per_edge_type_cutoff: Union[None, Sequence[float], Dict[str, Union[float, Dict[str, float]]]] = None,
        model_dtype: str = "float32",
        zbl: Optional[Dict[str, List]] = None,
        closest_training_pair: Optional[float] = None,
    ):
        super().__init__()
        self.config = resolve_hyperparameters(
            type_names=type_names,
            r_max=r_max,
            l_max=l_max,
            parity=parity,
            num_layers=num_layers,
            num_features=num_features,
            num_bessels=num_bessels,
            polynomial_cutoff_p=polynomial_cutoff_p,
            radial_mlp_depth=radial_mlp_depth,
            radial_mlp_width=radial_mlp_width,
            avg_num_neighbors=avg_num_neighbors,
            per_type_energy_shifts=per_type_energy_shifts,
            per_type_energy_scales=per_type_energy_scales,
            per_edge_type_cutoff=per_edge_type_cutoff,
            model_dtype=model_dtype,
            zbl=zbl,
            closest_training_pair=closest_training_pair,
        )
        # the resolved values from here on
        type_names, r_max, l_max = self.config["type_names"], self.config["r_max"], self.config["l_max"]
        num_types = len(type_names)
        shifts, scales = self.config["per_type_energy_shifts"], self.config["per_type_energy_scales"]
        edge_cutoffs = self.config["per_edge_type_cutoff"]
        self.type_names: List[str] = type_names
        self.num_types = num_types
        self.r_max = r_max
        self.model_dtype = _DTYPES[model_dtype]
        self.compute_forces = True
        self.compute_stress = True

        # geometry: edge harmonics and radial embedding
        irreps_edge_sh = o3.Irreps.spherical_harmonics(l_max, p=-1 if parity else 1)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_edge_sh, normalize=True, normalization="component")
        self.bessel = BesselBasis(r_max, num_bessels)
        self.cutoff = PolynomialCutoff(polynomial_cutoff_p)
        self.register_buffer(
            "edge_type_cutoff",
            torch.tensor(edge_cutoffs if edge_cutoffs is not None else [r_max] * num_types**2, dtype=torch.float64)
            .view(num_types, num_types),
        )

        # atoms: one-hot types, embedded as scalar features
        irreps_node_attr = o3.Irreps([(num_types, (0, 1))])
        irreps_features = o3.Irreps([(num_features, (0, 1))])
        self.type_embedding = o3.Linear(irreps_node_attr, irreps_features)

        parities = (1, -1) if parity else (1,)
        irreps_hidden = o3.Irreps([(num_features, (l, p)) for l in range(l_max + 1) for p in parities])
        layers = []
        for layer_index in range(num_layers):
            # the last layer only needs the scalars the readout uses
            target = irreps_hidden if layer_index < num_layers - 1 else o3.Irreps([(num_features, (0, 1))])
            layer = ConvNetLayer(
                irreps_in=irreps_features,
                irreps_hidden=target,
                irreps_edge_sh=irreps_edge_sh,
                irreps_node_attr=irreps_node_attr,
                num_radial=num_bessels,
                radial_mlp_depth=radial_mlp_depth,
                radial_mlp_width=radial_mlp_width,
                avg_num_neighbors=1.0 if avg_num_neighbors is None else float(avg_num_neighbors),
            )
            layers.append(layer)
            irreps_features = layer.irreps_out
        self.layers = torch.nn.ModuleList(layers)
        self.readout = o3.Linear(irreps_features, o3.Irreps("1x0e"))

        self.register_buffer("per_type_energy_shifts", torch.tensor(shifts, dtype=torch.float64))
        self.zbl: Optional[ZBL] = None if self.config["zbl"] is None else ZBL(**self.config["zbl"])
        self.register_buffer("per_type_energy_scales", torch.tensor(scales, dtype=torch.float64))

        for module in (self.spherical_harmonics, self.bessel, self.type_embedding, self.layers, self.readout):
            module.to(self.model_dtype)

    def metadata(self) -> Dict[str, str]:
        """Model metadata, every value an ASCII string (FILE_CONTRACT §2)."""
        metadata = {
            "model_dtype": self.config["model_dtype"],
            "type_names": " ".join(self.type_names),
            "num_types": str(self.num_types),
            "r_max": repr(self.r_max),
            "allow_tf32": "0",
            "nequip_version": __version__,
            # an atom's energy depends only on atoms within num_layers * r_max (LAMMPS ghosts)
            "num_layers": str(self.config["num_layers"]),
            # node features out of each layer: what LAMMPS ranks exchange between layers
            "layer_feature_widths": " ".join(str(layer.irreps_out.dim) for layer in self.layers),
            # layer(..., rows): on several ranks, no node-wise work for the ghosts
            "layer_rows": "selected",
        }
        if self.config["per_edge_type_cutoff"] is not None:
            metadata["per_edge_type_cutoff"] = " ".join(repr(c) for c in self.config["per_edge_type_cutoff"])
        zbl = self.config["zbl"]
        if zbl is not None:
            # the runtime evaluates the part pair_energy (LAMMPS on several ranks) where this is set
            metadata["pair_potential"] = "zbl"
            metadata["zbl_atomic_numbers"] = " ".join(str(z) for z in zbl["atomic_numbers"])
            metadata["zbl_inner_radius"] = " ".join(repr(r) for r in zbl["inner_radius"])
            metadata["zbl_outer_radius"] = " ".join(repr(r) for r in zbl["outer_radius"])
        # a record of the training data: pairs closer than any it held are extrapolation
        if self.config["closest_training_pair"] is not None:
            metadata["closest_training_pair"] = repr(self.config["closest_training_pair"])
        return metadata

    def edge_vectors(
        self,
        pos: torch.Tensor,
        cell: torch.Tensor,
        edge_index: torch.Tensor,
        edge_cell_shift: Optional[torch.Tensor],
        batch: torch.Tensor,
    ) -> torch.Tensor:
        """Edge vectors (E, 3), float64: ``pos[j] - pos[i] + edge_cell_shift . cell`` for edge (i, j)."""
        return edge_vectors(pos, cell, edge_index, edge_cell_shift, batch)

    def atomic_energy(
        self,
        edge_vec: torch.Tensor,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        """Per-atom energies (N, 1), float64, from the edge vectors (E, 3) in float64.

        The energy depends on positions and cell only through the edge vectors, so forces,
        virial and per-atom virials all follow from its gradient with respect to them.
        It is the composition of the parts below, which a LAMMPS run on several MPI ranks
        calls one by one, exchanging the ghost atoms' node features between layers, plus
        the pair energy of the edges (ZBL) when the model has one.
        """
        edge_sh, edge_radial = self.edge_embedding(edge_vec, atom_types, edge_index)
        node_attrs = self.node_attributes(atom_types)
        x = self.node_embedding(node_attrs)
        for layer in self.layers:
            x = layer(x, node_attrs, edge_sh, edge_radial, edge_index[0], edge_index[1])
        atomic_energy = self.energy_readout(x, atom_types)
        if self.zbl is not None:
            atomic_energy = atomic_energy + self.pair_energy(edge_vec, atom_types, edge_index)
        return atomic_energy

    # -- the parts of atomic_energy, exported as methods of TorchScript files ----------------

    @torch.jit.export
    def edge_embedding(
        self, edge_vec: torch.Tensor, atom_types: torch.Tensor, edge_index: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Edge harmonics (E, sh dim) and radial embedding times the cutoff envelope (E, num_bessels),
        in model_dtype, from the edge vectors (E, 3) in float64."""
        edge_length = torch.linalg.norm(edge_vec, dim=-1)
        edge_cutoff = self.edge_type_cutoff[atom_types[edge_index[0]], atom_types[edge_index[1]]]
        envelope = self.cutoff(edge_length / edge_cutoff)
        dtype = self.model_dtype
        edge_sh = self.spherical_harmonics(edge_vec.to(dtype))
        edge_radial = self.bessel(edge_length.to(dtype)) * envelope.to(dtype).unsqueeze(-1)
        return edge_sh, edge_radial

    @torch.jit.export
    def node_attributes(self, atom_types: torch.Tensor) -> torch.Tensor:
        """One-hot types (N + num_types, num_types) in model_dtype: the N atoms, then one reference
        atom of each type, which has no neighbors (:meth:`energy_readout` subtracts its energy)."""
        all_types = torch.cat([atom_types, torch.arange(self.num_types, device=atom_types.device)])
        return torch.nn.functional.one_hot(all_types, self.num_types).to(self.model_dtype)

    @torch.jit.export
    def node_embedding(self, node_attrs: torch.Tensor) -> torch.Tensor:
        """The features before the first layer (N + num_types, num_features): a function of the type."""
        return self.type_embedding(node_attrs)

    @torch.jit.export
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
        """Layer ``index`` (0-based) on the node features x (N + num_types, width of its input):
        the output features of every node, or of the nodes ``rows`` (row k that of node rows[k]).
        On several LAMMPS ranks ``rows`` are the owned atoms and the reference atoms: a ghost's
        output comes from its owner, so its node-wise work would be thrown away."""
        for i, layer in enumerate(self.layers):
            if i == index:
                return layer(x, node_attrs, edge_sh, edge_radial, edge_index[0], edge_index[1], rows)
        raise IndexError(f"layer index {index} out of range: the model has {len(self.layers)} layers")

    @torch.jit.export
    def energy_readout(self, x: torch.Tensor, atom_types: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N, 1), float64, from the last layer's features (N + num_types, width)."""
        num_atoms = atom_types.shape[0]
        readout = self.readout(x).to(torch.float64)
        readout = readout[:num_atoms] - readout[num_atoms:][atom_types]
        scales = self.per_type_energy_scales[atom_types].unsqueeze(-1)
        shifts = self.per_type_energy_shifts[atom_types].unsqueeze(-1)
        return scales * readout + shifts

    @torch.jit.export
    def pair_energy(self, edge_vec: torch.Tensor, atom_types: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Per-atom pair energies (N, 1), float64 (zeros without ZBL): half of each edge's pair
        energy goes to the edge's center atom, so each pair's goes half to each of its atoms."""
        num_atoms = atom_types.shape[0]
        energy = torch.zeros((num_atoms, 1), dtype=torch.float64, device=edge_vec.device)
        zbl = self.zbl
        if zbl is None:
            return energy
        edge_center = edge_index[0]
        pair = zbl(torch.linalg.norm(edge_vec, dim=-1), atom_types[edge_center], atom_types[edge_index[1]])
        return energy.index_add(0, edge_center, 0.5 * pair.unsqueeze(-1))

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Energies and their derivatives for one frame or a batch of frames (FILE_CONTRACT §1).

        With ``local_mask`` (a LAMMPS rank's owned atoms among its ghosts), only the masked
        atoms' energies are summed (and returned: the others' are 0), while forces and
        per-atom virials are given on every atom.
        """
        batch, num_frames, cell, edge_vec, local_mask = frame_geometry(data)
        atom_types, edge_index = data[keys.ATOM_TYPES], data[keys.EDGE_INDEX]
        if torch.jit.is_scripting():
            # TorchScript has no enable_grad; compiled models run with grad mode on
            energies = self._energy_and_derivatives(edge_vec, cell, atom_types, edge_index, batch, num_frames, local_mask)
        else:
            # validation and inference may run under no_grad: derivatives need the graph regardless
            with torch.enable_grad():
                energies = self._energy_and_derivatives(
                    edge_vec, cell, atom_types, edge_index, batch, num_frames, local_mask
                )
        return with_energies(data.copy(), energies)

    def _energy_and_derivatives(
        self,
        edge_vec: torch.Tensor,
        cell: torch.Tensor,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        num_frames: int,
        local_mask: Optional[torch.Tensor],
    ) -> Energies:
        """Atomic and total energies, forces, virial, stress and per-atom virials (see
        :func:`energy_derivatives`)."""
        edge_vec = edge_vec.detach().requires_grad_(self.compute_forces or self.compute_stress)
        atomic_energy = self.atomic_energy(edge_vec, atom_types, edge_index)
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


def edge_vectors(
    pos: torch.Tensor,
    cell: torch.Tensor,
    edge_index: torch.Tensor,
    edge_cell_shift: Optional[torch.Tensor],
    batch: torch.Tensor,
) -> torch.Tensor:
    """Edge vectors (E, 3), float64: ``pos[j] - pos[i] + edge_cell_shift . cell`` for edge (i, j)
    (cell (F, 3, 3), batch (N,) the frame of each atom)."""
    edge_center = edge_index[0]
    edge_vec = pos[edge_index[1]] - pos[edge_center]
    if edge_cell_shift is not None:
        edge_vec = edge_vec + torch.bmm(edge_cell_shift.unsqueeze(1), cell[batch[edge_center]]).squeeze(1)
    return edge_vec


def frame_geometry(
    data: Dict[str, torch.Tensor],
) -> Tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``batch`` (N,), the number of frames, ``cell`` (F, 3, 3; zeros without one), the edge
    vectors (E, 3) and ``local_mask`` (or None) of a FILE_CONTRACT §1 dictionary (one frame,
    or a batch with ``batch`` and ``num_atoms``)."""
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
    edge_cell_shift: Optional[torch.Tensor] = None
    if keys.EDGE_CELL_SHIFT in data:
        edge_cell_shift = data[keys.EDGE_CELL_SHIFT]
    local_mask: Optional[torch.Tensor] = None
    if keys.LOCAL_MASK in data:
        local_mask = data[keys.LOCAL_MASK]
    edge_vec = edge_vectors(pos, cell, data[keys.EDGE_INDEX], edge_cell_shift, batch)
    return batch, num_frames, cell, edge_vec, local_mask


def with_energies(out: Dict[str, torch.Tensor], energies: Energies) -> Dict[str, torch.Tensor]:
    """``out`` with the outputs of :func:`energy_derivatives` under their FILE_CONTRACT §1 names."""
    atomic_energy, total_energy, forces, virial, stress, atom_virial = energies
    out[keys.ATOMIC_ENERGY] = atomic_energy
    out[keys.TOTAL_ENERGY] = total_energy
    if forces is not None:
        out[keys.FORCES] = forces
    if virial is not None and stress is not None and atom_virial is not None:
        out[keys.VIRIAL] = virial
        out[keys.STRESS] = stress
        out[keys.ATOM_VIRIAL] = atom_virial
    return out


def energy_derivatives(
    atomic_energy: torch.Tensor,
    edge_vec: torch.Tensor,
    cell: torch.Tensor,
    edge_index: torch.Tensor,
    batch: torch.Tensor,
    num_frames: int,
    local_mask: Optional[torch.Tensor],
    compute_forces: bool,
    compute_stress: bool,
    training: bool,
) -> Energies:
    r"""Total energies, then forces and virials from :math:`g_e = \partial E / \partial r_e`.

    ``atomic_energy`` (N, 1) float64 is a function of the edge vectors ``edge_vec`` (E, 3),
    which require grad when forces or stress are asked for. With ``local_mask``, only the
    masked atoms' energies count (the others' are returned as 0).

    For edge :math:`e = (i, j)` with vector :math:`r_e = r_j - r_i + s_e \cdot h`:
    :math:`F_i = \sum_{e = (i, \cdot)} g_e - \sum_{e = (\cdot, i)} g_e`; the edge virial
    :math:`W_e = -\tfrac12 (r_e \otimes g_e + g_e \otimes r_e)` sums to the virial
    :math:`-\partial E / \partial \varepsilon` (symmetric strain of positions and cell), and
    half of it goes to each of the edge's atoms for the per-atom virial. In training the graph is
    kept (``create_graph``) so that the loss differentiates through forces and stress.

    Returns ``atomic_energy, total_energy (F, 1), forces (N, 3), virial (F, 3, 3), stress
    (F, 3, 3; NaN without volume), atom_virial (N, 3, 3)``, the derivatives None when not asked for.
    """
    num_atoms = atomic_energy.shape[0]
    if local_mask is not None:
        atomic_energy = torch.where(local_mask.unsqueeze(-1), atomic_energy, torch.zeros_like(atomic_energy))
    total_energy = torch.zeros((num_frames, 1), dtype=torch.float64, device=edge_vec.device).index_add(
        0, batch, atomic_energy
    )
    if not (compute_forces or compute_stress):
        return atomic_energy, total_energy, None, None, None, None
    grads = torch.autograd.grad([total_energy.sum()], [edge_vec], create_graph=training, allow_unused=True)
    edge_grad = grads[0]
    if edge_grad is None:
        edge_grad = torch.zeros_like(edge_vec)
    if not training:
        # nothing downstream differentiates evaluation outputs: let the graph go
        atomic_energy, total_energy = atomic_energy.detach(), total_energy.detach()
        edge_vec = edge_vec.detach()

    edge_center = edge_index[0]
    forces: Optional[torch.Tensor] = None
    virial: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None
    atom_virial: Optional[torch.Tensor] = None
    if compute_forces:
        forces = (
            torch.zeros((num_atoms, 3), dtype=edge_grad.dtype, device=edge_grad.device)
            .index_add(0, edge_center, edge_grad)
            .index_add(0, edge_index[1], edge_grad, alpha=-1.0)
        )
    if compute_stress:
        outer = edge_vec.unsqueeze(-1) * edge_grad.unsqueeze(-2)
        edge_virial = -0.5 * (outer + outer.transpose(-1, -2))
        virial = torch.zeros((num_frames, 3, 3), dtype=edge_virial.dtype, device=edge_virial.device).index_add(
            0, batch[edge_center], edge_virial
        )
        half = 0.5 * edge_virial
        atom_virial = (
            torch.zeros((num_atoms, 3, 3), dtype=edge_virial.dtype, device=edge_virial.device)
            .index_add(0, edge_center, half)
            .index_add(0, edge_index[1], half)
        )
        volume = torch.linalg.det(cell).abs().view(-1, 1, 1)
        # no volume (non-periodic): stress is undefined, the virial is not. Dividing by 1
        # there keeps the gradient of the NaN branch 0 instead of 0/0 (a loss that leaves
        # such frames out must not get NaN gradients).
        periodic = volume > 0
        stress = torch.where(periodic, -virial / torch.where(periodic, volume, torch.ones_like(volume)),
                             torch.full_like(virial, float("nan")))  # fmt: skip
    return atomic_energy, total_energy, forces, virial, stress, atom_virial


class HyperparameterError(ValueError):
    """A model hyperparameter that cannot make a model; ``key`` names it, and the message
    (``<key>: <what is wrong>``) says why. The one check of each hyperparameter's value:
    the training configuration reports these same messages under ``model.`` (``data.`` for
    ``type_names``)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


def resolve_hyperparameters(
    type_names: Sequence[str],
    r_max: float,
    l_max: int,
    parity: bool,
    num_layers: int,
    num_features: int,
    num_bessels: int,
    polynomial_cutoff_p: float,
    radial_mlp_depth: int,
    radial_mlp_width: int,
    avg_num_neighbors: Optional[float],
    per_type_energy_shifts: PerType,
    per_type_energy_scales: PerType,
    per_edge_type_cutoff,
    model_dtype: str,
    zbl: Optional[Dict[str, List]],
    closest_training_pair: Optional[float],
) -> Dict[str, Any]:
    """NequIPModel's arguments checked and resolved (``model.config``): per-type values as lists
    in type order, per-edge-type cutoffs as num_types² floats (or None), numbers as floats and ints.

    Raises HyperparameterError naming the first argument that cannot make a model.
    """
    type_names = _check_type_names(type_names)
    if model_dtype not in _DTYPES:
        raise HyperparameterError("model_dtype", f"must be 'float32' or 'float64', got {model_dtype!r}")
    _check_positive("r_max", r_max)
    _check_positive("polynomial_cutoff_p", polynomial_cutoff_p)
    if avg_num_neighbors is not None:
        _check_positive("avg_num_neighbors", avg_num_neighbors)
    if closest_training_pair is not None:
        _check_positive("closest_training_pair", closest_training_pair)
    for name, value, minimum in (
        ("l_max", l_max, 0),
        ("num_layers", num_layers, 1),
        ("num_features", num_features, 1),
        ("num_bessels", num_bessels, 1),
        ("radial_mlp_depth", radial_mlp_depth, 0),
        ("radial_mlp_width", radial_mlp_width, 1),
    ):
        _check_integer(name, value, minimum)
    if not isinstance(parity, bool):
        raise HyperparameterError("parity", f"must be true or false, got {parity!r}")
    edge_cutoffs = _edge_type_cutoffs(per_edge_type_cutoff, type_names, float(r_max))
    if zbl is not None:
        try:
            zbl = check_zbl(zbl, type_names, edge_cutoffs or [float(r_max)] * len(type_names) ** 2)
        except ValueError as err:  # "zbl...: problem"
            raise HyperparameterError(*str(err).split(": ", 1)) from None
    return dict(
        type_names=type_names,
        r_max=float(r_max),
        l_max=int(l_max),
        parity=parity,
        num_layers=int(num_layers),
        num_features=int(num_features),
        num_bessels=int(num_bessels),
        polynomial_cutoff_p=float(polynomial_cutoff_p),
        radial_mlp_depth=int(radial_mlp_depth),
        radial_mlp_width=int(radial_mlp_width),
        avg_num_neighbors=None if avg_num_neighbors is None else float(avg_num_neighbors),
        per_type_energy_shifts=_per_type("per_type_energy_shifts", per_type_energy_shifts, type_names, default=0.0),
        per_type_energy_scales=_per_type("per_type_energy_scales", per_type_energy_scales, type_names, default=1.0),
        per_edge_type_cutoff=edge_cutoffs,
        model_dtype=model_dtype,
        zbl=zbl,
        closest_training_pair=None if closest_training_pair is None else float(closest_training_pair),
    )


def _check_type_names(type_names: Sequence[str]) -> List[str]:
    """The type names as strings: at least one, each one ASCII word (the metadata joins them
    with single spaces, FILE_CONTRACT §2), no two alike."""
    if isinstance(type_names, str):
        raise HyperparameterError("type_names", f"must be a list of names, got the string {type_names!r}; e.g. ['Si', 'C']")
    names = [str(name) for name in type_names]
    if not names:
        raise HyperparameterError("type_names", "must name at least one type, e.g. ['Si', 'C']")
    for name in names:
        if name.split() != [name] or not name.isascii():
            raise HyperparameterError(
                "type_names",
                f"{name!r} is not a valid type name: each must be one ASCII word, without whitespace"
                " (the model's metadata joins the names with single spaces)",
            )
    for name in names:
        if names.count(name) > 1:
            raise HyperparameterError("type_names", f"{name!r} appears more than once; give each type once")
    return names


def _check_integer(name: str, value, minimum: int) -> None:
    if not (_is_number(value) and math.isfinite(value) and value == int(value) and value >= minimum):
        raise HyperparameterError(name, f"must be an integer at least {minimum}, got {value!r}")


def _check_positive(name: str, value) -> None:
    if not (_is_number(value) and 0 < value < math.inf):
        raise HyperparameterError(name, f"must be a finite number greater than 0, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _per_type(name: str, value: PerType, type_names: List[str], default: float) -> List[float]:
    """A per-type quantity as a list of finite numbers in type order."""
    if value is None:
        return [default] * len(type_names)
    if _is_number(value):
        values = [float(value)] * len(type_names)
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(type_names))
        missing = [t for t in type_names if t not in value]
        if unknown or missing:
            raise HyperparameterError(
                name, f"must give a value for each of the model's types {type_names}; unknown: {unknown}, missing: {missing}"
            )
        values = [value[t] for t in type_names]
    else:
        values = list(value)
        if len(values) != len(type_names):
            raise HyperparameterError(
                name, f"has {len(values)} values but the model has {len(type_names)} types {type_names}"
            )
    if not all(_is_number(v) and math.isfinite(v) for v in values):
        raise HyperparameterError(name, f"must be finite numbers, got {value!r}")
    return [float(v) for v in values]


def _edge_type_cutoffs(value, type_names: List[str], r_max: float) -> Optional[List[float]]:
    """Per-edge-type cutoffs as num_types² floats, row-major (row = center type), or None."""
    if value is None:
        return None
    num_types = len(type_names)
    key = "per_edge_type_cutoff"
    if isinstance(value, dict):
        table = [[r_max] * num_types for _ in type_names]
        for center, entry in value.items():
            if center not in type_names:
                raise HyperparameterError(key, f"unknown type {center!r}; the model's types are {type_names}")
            row = type_names.index(center)
            if isinstance(entry, dict):
                for neighbor, cutoff in entry.items():
                    if neighbor not in type_names:
                        raise HyperparameterError(key, f"unknown type {neighbor!r}; the model's types are {type_names}")
                    table[row][type_names.index(neighbor)] = cutoff
            else:
                table[row] = [entry] * num_types
        flat = [c for row in table for c in row]
    else:
        flat = [c for row_or_c in value for c in (row_or_c if isinstance(row_or_c, (list, tuple)) else [row_or_c])]
        if len(flat) != num_types**2:
            raise HyperparameterError(
                key, f"needs {num_types}² = {num_types**2} values (row-major, row = center type), got {len(flat)}"
            )
    if any(not (_is_number(c) and 0 < c <= r_max) for c in flat):
        raise HyperparameterError(key, f"values must lie in (0, r_max = {r_max}], got {flat}")
    return [float(c) for c in flat]


# NequIPModel's arguments, in order: the keys of model.config
MODEL_ARGUMENTS = tuple(inspect.signature(resolve_hyperparameters).parameters)
