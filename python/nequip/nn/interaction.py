"""NequIP's interaction block and the gated convolution layer built from it."""

import math
from typing import Optional

import torch
from e3nn import o3
from e3nn.nn import Gate
from e3nn.util.jit import compile_mode

from .message_passing import TensorProductSum


def tp_path_exists(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, ir_out: o3.Irrep) -> bool:
    """Whether some irrep of ``irreps_in1 ⊗ irreps_in2`` is ``ir_out``."""
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in1 for _, ir2 in irreps_in2)


@compile_mode("script")
class InteractionBlock(torch.nn.Module):
    r"""Equivariant message passing: neighbor features times edge harmonics, weighted by the radial MLP.

    .. math::
        x_i' = \mathrm{Lin}_2\Big(\frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal N(i)}
               R(r_{ij}) \, \mathrm{Lin}_1(x_j) \otimes Y(\hat r_{ij})\Big) + \mathrm{SC}(x_i, z_i)

    Args:
        irreps_in: node features ``x`` (N, irreps_in.dim).
        irreps_out: output node features.
        irreps_edge_sh: edge spherical harmonics ``Y`` (E, irreps_edge_sh.dim).
        irreps_node_attr: one-hot types ``z`` (N, num_types) used by the self-connection SC.
        num_radial: width of the radial embedding (E, num_radial) fed to the radial MLP R.
        radial_mlp_depth, radial_mlp_width: hidden layers of R.
        avg_num_neighbors: :math:`\bar n`, the neighbor-sum normalisation.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        irreps_edge_sh: o3.Irreps,
        irreps_node_attr: o3.Irreps,
        num_radial: int,
        radial_mlp_depth: int,
        radial_mlp_width: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.inv_sqrt_avg_num_neighbors = 1.0 / math.sqrt(avg_num_neighbors)

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        # the tensor product holds the radial MLP R that weights it (and recomputes it in the backward pass)
        self.tensor_product = TensorProductSum(
            self.irreps_in, irreps_edge_sh, self.irreps_out, [num_radial] + radial_mlp_depth * [radial_mlp_width]
        )
        self.linear_2 = o3.Linear(self.tensor_product.irreps_mid.simplify(), self.irreps_out)
        self.self_connection = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_node_attr, self.irreps_out)

    def forward(
        self,
        node_features: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
        rows: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        # rows: the nodes whose output to compute (all when None); every node is a neighbor's source
        if rows is None:
            self_connection = self.self_connection(node_features, node_attrs)
        else:
            self_connection = self.self_connection(node_features.index_select(0, rows), node_attrs.index_select(0, rows))
        x = self.linear_1(node_features)
        x = self.tensor_product(x, edge_sh, edge_radial, edge_center, edge_neighbor)
        if rows is not None:
            x = x.index_select(0, rows)
        x = self.linear_2(x * self.inv_sqrt_avg_num_neighbors)
        return x + self_connection


@compile_mode("script")
class ConvNetLayer(torch.nn.Module):
    """An interaction block followed by an equivariant gate nonlinearity.

    The block's output irreps are chosen so that the gate yields the requested ``irreps_hidden``
    restricted to what the tensor product can reach from ``irreps_in``: scalars go through an
    activation (SiLU if even, tanh if odd), every non-scalar is multiplied by an extra gate scalar.

    Shapes: node features (N, irreps_in.dim) -> (N, self.irreps_out.dim).
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_edge_sh: o3.Irreps,
        irreps_node_attr: o3.Irreps,
        num_radial: int,
        radial_mlp_depth: int,
        radial_mlp_width: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        irreps_in = o3.Irreps(irreps_in)
        irreps_edge_sh = o3.Irreps(irreps_edge_sh)
        reachable = [(mul, ir) for mul, ir in o3.Irreps(irreps_hidden) if tp_path_exists(irreps_in, irreps_edge_sh, ir)]
        irreps_scalars = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l == 0])
        irreps_gated = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l > 0])
        gate_ir = "0e" if tp_path_exists(irreps_in, irreps_edge_sh, "0e") else "0o"
        irreps_gates = o3.Irreps([(mul, gate_ir) for mul, _ in irreps_gated])
        activation = {1: torch.nn.functional.silu, -1: torch.tanh}

        self.gate = Gate(
            irreps_scalars,
            [activation[ir.p] for _, ir in irreps_scalars],
            irreps_gates,
            [activation[ir.p] for _, ir in irreps_gates],
            irreps_gated,
        )
        self.interaction = InteractionBlock(
            irreps_in=irreps_in,
            irreps_out=self.gate.irreps_in,
            irreps_edge_sh=irreps_edge_sh,
            irreps_node_attr=irreps_node_attr,
            num_radial=num_radial,
            radial_mlp_depth=radial_mlp_depth,
            radial_mlp_width=radial_mlp_width,
            avg_num_neighbors=avg_num_neighbors,
        )
        self.irreps_in = irreps_in
        self.irreps_out = self.gate.irreps_out

    def forward(
        self,
        node_features: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
        rows: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        x = self.interaction(node_features, node_attrs, edge_sh, edge_radial, edge_center, edge_neighbor, rows)
        return self.gate(x)
