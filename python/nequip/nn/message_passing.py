r"""NequIP's message: a weighted "uvu" tensor product of neighbour features and edge harmonics,
summed over each centre's edges, computed without keeping per-edge messages.

.. math::
    M_{n,u,k}^{(p)} = \sum_{e:\ c(e) = n} w_{e,p,u} \sum_{i} x_{j(e),u,i}\, A^{(p)}_{e,i,k},
    \qquad A^{(p)}_{e,i,k} = \alpha_p \sum_{j} C^{(p)}_{ijk}\, Y_{e,j}, \qquad
    w_e = h_e W

for every path ``p = (l_1, l_2 -> l_3)``: ``x`` node features, ``Y`` edge spherical harmonics,
``C`` Clebsch-Gordan coefficients, ``alpha_p`` e3nn's path normalisation, ``h`` the radial MLP's
last hidden layer and ``W`` its (scaled) output weights. It is the function of e3nn's
``o3.TensorProduct(..., "uvu", shared_weights=False)`` applied to ``x[j(e)]`` followed by
``index_add`` over centres (the NequIP interaction of Batzner et al.), organised for memory:

* ``A`` is one small matmul per edge, shared by all channels ``u`` (e3nn forms the outer products
  ``x (x) Y`` of every path and channel instead);
* the forward pass writes straight into the node sums: every per-edge quantity is a product of
  gathered node data and the small per-edge ``A`` and ``w``, with sums over at most five terms,
  which inductor fuses into its scatter kernels, so no ``(E, paths * channels * (2l+1))`` tensor
  exists;
* the backward pass (:class:`_MessageSum`) recomputes ``A`` and ``w`` instead of keeping them:
  per edge it keeps only ``Y`` and ``h``, shared with the rest of the model. This is what makes
  forces and stress of large systems fit in memory.

TorchScript cannot run a custom autograd function, so scripted models differentiate
:meth:`TensorProductSum.message_sum` with autograd: the same function, with e3nn-like memory.
"""

import math
from typing import List, Tuple

import torch
from e3nn import o3


class TensorProductSum(torch.nn.Module):
    """Neighbour sum of the radial-weighted "uvu" tensor products of NequIP's interaction block.

    Args:
        irreps_in: node features ``x``; every irrep's channels pair with one weight per path.
        irreps_edge_sh: edge harmonics ``Y``, one channel per irrep.
        irreps_out: the irreps that paths may produce; paths to other irreps are left out.

    Paths are those of e3nn's convention (every ``l_3`` in ``l_1 (x) l_2`` with matching parity
    that ``irreps_out`` contains), and the output layout is that of the corresponding e3nn
    tensor product: one ``(mul, 2l_3+1)`` block per path, blocks sorted by irrep
    (``self.irreps_mid``); weights are ``(E, self.weight_numel)``, ``mul`` per path, in path order.
    """

    # one group per (input irrep, output dimension): (x offset, mul, d1, A column, paths, d3)
    groups: List[Tuple[int, int, int, int, int, int]]
    # for each group, its paths' (index in weight order, output block)
    group_paths: List[List[Tuple[int, int]]]
    block_sizes: List[int]
    weight_offsets: List[int]
    # for each input irrep: (x offset, mul * d1)
    input_slices: List[Tuple[int, int]]
    input_dims: List[int]
    group_input: List[int]

    def __init__(self, irreps_in: o3.Irreps, irreps_edge_sh: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        irreps_in, irreps_edge_sh, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_edge_sh), o3.Irreps(irreps_out)
        if any(mul != 1 for mul, _ in irreps_edge_sh):
            raise ValueError(f"edge harmonics must have one channel per irrep, got {irreps_edge_sh}")

        # paths (i_in1, i_in2, l3 irrep), then sorted into e3nn's output order
        paths = []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_edge_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in irreps_out:
                        paths.append((i, j, mul, ir_out))
        irreps_mid, permutation, _ = o3.Irreps([(mul, ir) for _, _, mul, ir in paths]).sort()
        self.irreps_in, self.irreps_edge_sh, self.irreps_mid = irreps_in, irreps_edge_sh, irreps_mid
        self.weight_numel = sum(mul for _, _, mul, _ in paths)
        self.block_sizes = [mul * ir.dim for mul, ir in irreps_mid]
        self.weight_offsets = [sum(mul for _, _, mul, _ in paths[:k]) for k in range(len(paths))]
        in_slices, sh_slices = irreps_in.slices(), irreps_edge_sh.slices()

        keys: List[Tuple[int, int]] = []
        for i, _, _, ir_out in paths:
            if (i, ir_out.dim) not in keys:
                keys.append((i, ir_out.dim))
        blocks = []
        self.groups, self.group_paths, self.group_input = [], [], []
        column = 0
        for i, d3 in keys:
            members = [k for k, (i_k, _, _, ir) in enumerate(paths) if (i_k, ir.dim) == (i, d3)]
            mul, ir1 = irreps_in[i]
            d1 = ir1.dim
            # columns (i, path, k) of A = Y @ coefficients
            block = torch.zeros(irreps_edge_sh.dim, d1, len(members), d3, dtype=torch.float64)
            for q, k in enumerate(members):
                _, j, _, ir3 = paths[k]
                ir2 = irreps_edge_sh[j].ir
                # e3nn's "component" normalisation; each path has its own output block
                alpha = math.sqrt(ir3.dim)
                cg = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64) * alpha  # (d1, d2, d3)
                block[sh_slices[j], :, q, :] = cg.permute(1, 0, 2)
            blocks.append(block.reshape(irreps_edge_sh.dim, -1))
            self.groups.append((in_slices[i].start, mul, d1, column, len(members), d3))
            self.group_paths.append([(k, permutation[k]) for k in members])
            self.group_input.append(i)
            column += d1 * len(members) * d3
        coefficients = torch.cat(blocks, dim=1) if blocks else torch.zeros(irreps_edge_sh.dim, 0, dtype=torch.float64)
        # derived from the irreps alone: not part of the state_dict; .to(dtype) sets its precision
        self.register_buffer("coefficients", coefficients, persistent=False)
        self.input_slices = [(s.start, s.stop - s.start) for s in in_slices]
        self.input_dims = [ir.dim for _, ir in irreps_in]

    def forward(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        radial_hidden: torch.Tensor,
        radial_weight: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """``x`` (N, irreps_in.dim), ``edge_sh`` (E, irreps_edge_sh.dim), ``radial_hidden`` (E, H),
        ``radial_weight`` (H, weight_numel), centre/neighbour indices (E,) -> (N, irreps_mid.dim)."""
        if torch.jit.is_scripting():
            return self.message_sum(x, edge_sh, radial_hidden @ radial_weight, edge_center, edge_neighbor)
        return self._apply_function(x, edge_sh, radial_hidden, radial_weight, edge_center, edge_neighbor)

    @torch.jit.unused
    def _apply_function(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        radial_hidden: torch.Tensor,
        radial_weight: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        return _MessageSum.apply(self, x, edge_sh, radial_hidden, radial_weight, edge_center, edge_neighbor)

    def message_sum(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """The node sums (N, irreps_mid.dim) from per-edge weights (E, weight_numel)."""
        num_nodes = x.shape[0]
        a = edge_sh @ self.coefficients
        x_neighbor = [xi.index_select(0, edge_neighbor) for xi in self._channels_last(x)]
        blocks: List[torch.Tensor] = [x] * len(self.block_sizes)  # every entry is replaced
        for g in range(len(self.groups)):
            _, mul, d1, column, num_paths, d3 = self.groups[g]
            message = self._message(x_neighbor[self.group_input[g]], a, weights, g)  # (E, paths, d3, mul)
            summed = _neighbor_sum(message.flatten(1), edge_center, num_nodes).view(num_nodes, num_paths, d3, mul)
            for q, (_, block) in enumerate(self.group_paths[g]):
                blocks[block] = summed[:, q].transpose(1, 2).reshape(num_nodes, mul * d3)
        return torch.cat(blocks, dim=1)

    def _channels_last(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Node features as one (N, 2l+1, mul) tensor per input irrep: channels innermost, so
        that per-edge products are vectorised over channels."""
        return [
            x.narrow(1, offset, width).view(x.shape[0], width // ir_dim, ir_dim).transpose(1, 2).contiguous()
            for (offset, width), ir_dim in zip(self.input_slices, self.input_dims)
        ]

    def _products(self, x_neighbor: torch.Tensor, a: torch.Tensor, g: int) -> torch.Tensor:
        """sum_i x[j(e), i, u] A[e, i, path, k] for a group: (E, paths, d3, mul)."""
        _, mul, d1, column, num_paths, d3 = self.groups[g]
        a_group = a.narrow(1, column, d1 * num_paths * d3).view(-1, d1, num_paths, d3, 1)
        return (x_neighbor.view(-1, d1, 1, 1, mul) * a_group).sum(1)

    def _group_weights(self, weights: torch.Tensor, g: int) -> torch.Tensor:
        """The group's path weights as (E, paths, 1, mul)."""
        mul = self.groups[g][1]
        return torch.stack([weights.narrow(1, self.weight_offsets[k], mul) for k, _ in self.group_paths[g]], dim=1).unsqueeze(2)

    def _message(self, x_neighbor: torch.Tensor, a: torch.Tensor, weights: torch.Tensor, g: int) -> torch.Tensor:
        return self._products(x_neighbor, a, g) * self._group_weights(weights, g)


def _neighbor_sum(values: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum the rows of ``values`` (E, C) into (num_nodes, C) by ``index`` (E,).

    A scatter-add with the index expanded along the row: PyTorch's CPU kernel for that case
    sorts the index once and sums each node's rows without atomics (inductor calls it too).
    """
    out = torch.zeros((num_nodes, values.shape[1]), dtype=values.dtype, device=values.device)
    return out.scatter_add(0, index.unsqueeze(1).expand_as(values), values)


class _MessageSum(torch.autograd.Function):
    """:meth:`TensorProductSum.message_sum` with weights ``radial_hidden @ radial_weight``, whose
    backward recomputes the per-edge ``A`` and weights rather than keeping them.

    The backward is written in differentiable operations, so training (which differentiates
    forces) can take second derivatives through it.
    """

    @staticmethod
    def forward(ctx, module, x, edge_sh, radial_hidden, radial_weight, edge_center, edge_neighbor):
        ctx.module = module
        ctx.save_for_backward(x, edge_sh, radial_hidden, radial_weight, edge_center, edge_neighbor)
        return module.message_sum(x, edge_sh, radial_hidden @ radial_weight, edge_center, edge_neighbor)

    @staticmethod
    def backward(ctx, grad_out):
        module: TensorProductSum = ctx.module
        x, edge_sh, radial_hidden, radial_weight, edge_center, edge_neighbor = ctx.saved_tensors
        num_nodes, num_edges = x.shape[0], edge_sh.shape[0]
        need_x, need_sh = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need_weights = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        weights = radial_hidden @ radial_weight
        a = edge_sh @ module.coefficients
        x_neighbor = [xi.index_select(0, edge_neighbor) for xi in module._channels_last(x)]
        grad_blocks = grad_out.split(module.block_sizes, dim=1)

        grad_weights: List[torch.Tensor] = [None] * len(module.weight_offsets)  # type: ignore[list-item]
        grad_a: List[torch.Tensor] = []
        grad_x_neighbor: List[torch.Tensor] = [None] * len(module.input_slices)  # type: ignore[list-item]
        for g, (_, mul, d1, column, num_paths, d3) in enumerate(module.groups):
            i = module.group_input[g]
            # the output gradient of the group's paths, channels last, at each edge's centre
            grad_sums = torch.stack(
                [grad_blocks[block].view(num_nodes, mul, d3).transpose(1, 2) for _, block in module.group_paths[g]], dim=1
            )
            grad_message = grad_sums.index_select(0, edge_center)  # (E, paths, d3, mul)
            if need_weights:
                grad_w = (grad_message * module._products(x_neighbor[i], a, g)).sum(2)  # (E, paths, mul)
                for q, (k, _) in enumerate(module.group_paths[g]):
                    grad_weights[k] = grad_w[:, q]
            weighted = grad_message * module._group_weights(weights, g)  # (E, paths, d3, mul)
            if need_sh:
                # d/dA: sum over channels
                products = weighted.view(num_edges, 1, num_paths, d3, mul) * x_neighbor[i].view(num_edges, d1, 1, 1, mul)
                grad_a.append(products.sum(-1).reshape(num_edges, d1 * num_paths * d3))
            if need_x:
                # d/dx: sum over paths and k, then (below) over each neighbour's edges
                a_group = a.narrow(1, column, d1 * num_paths * d3).view(num_edges, d1, num_paths * d3, 1)
                grad_x_group = (weighted.view(num_edges, 1, num_paths * d3, mul) * a_group).sum(2)  # (E, d1, mul)
                previous = grad_x_neighbor[i]
                grad_x_neighbor[i] = grad_x_group if previous is None else previous + grad_x_group

        grad_x = None
        if need_x:
            parts = []
            for i, (_, width) in enumerate(module.input_slices):
                d1 = module.input_dims[i]
                summed = torch.zeros((num_nodes, width), dtype=x.dtype, device=x.device)
                if grad_x_neighbor[i] is not None:
                    summed = _neighbor_sum(grad_x_neighbor[i].flatten(1), edge_neighbor, num_nodes)
                # back from channels last to e3nn's (mul, 2l+1) layout
                parts.append(summed.view(num_nodes, d1, width // d1).transpose(1, 2).reshape(num_nodes, width))
            grad_x = torch.cat(parts, dim=1)
        grad_edge_sh = None
        if need_sh:
            grad_edge_sh = torch.cat(grad_a, dim=1) @ module.coefficients.t()
        grad_hidden, grad_radial_weight = None, None
        if need_weights:
            grad_w = torch.cat(grad_weights, dim=1)
            grad_hidden = grad_w @ radial_weight.t() if ctx.needs_input_grad[3] else None
            grad_radial_weight = radial_hidden.t() @ grad_w if ctx.needs_input_grad[4] else None
        return None, grad_x, grad_edge_sh, grad_hidden, grad_radial_weight, None, None
