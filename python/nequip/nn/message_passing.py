r"""NequIP's message: a weighted "uvu" tensor product of neighbour features and edge harmonics,
summed over each centre's edges, computed without keeping per-edge messages.

.. math::
    M_{n,u,k}^{(p)} = \sum_{e:\ c(e) = n} w_{e,p,u} \sum_{i} x_{j(e),u,i}\, A^{(p)}_{e,i,k},
    \qquad A^{(p)}_{e,i,k} = \alpha_p \sum_{j} C^{(p)}_{ijk}\, Y_{e,j}, \qquad
    w_e = h_e W

for every path ``p = (l_1, l_2 -> l_3)``: ``x`` node features, ``Y`` edge spherical harmonics,
``C`` Clebsch-Gordan coefficients, ``alpha_p`` e3nn's "component" normalisation, ``h`` the
radial MLP's last hidden layer and ``W`` its (scaled) output weights. This is e3nn's
``o3.TensorProduct(..., "uvu", shared_weights=False)`` applied to ``x[j(e)]``, then summed over
each centre's edges (NequIP's interaction, Batzner et al. 2022), organised for speed and memory:

* paths are grouped by input irrep and output dimension; for each group, ``A`` (a few numbers
  per edge, shared by all channels ``u``) and ``w`` are small matmuls, and the message is a
  product over at most five terms, vectorised over channels (features are channels-last here);
  eager code contracts all groups of one input irrep (a :class:`PathRun`) with one ``bmm``,
  traced code one group at a time, which inductor fuses into the kernels around it;
* the neighbour sum is a scatter-add with an expanded index, which PyTorch's CPU kernel does by
  sorting the index once (no atomics), eager and in AOTInductor files alike;
* the backward pass (:class:`_MessageSum`) recomputes ``A``, ``w`` and the gathered features one
  input irrep at a time instead of keeping them: per edge it keeps only ``Y`` and ``h``. No tensor of
  all the messages of an edge, ``(E, paths * channels * (2l+1))``, ever exists, which is what
  lets forces and stress of large systems fit in memory;
* eager on CPU (training), each input irrep's backward is one C++ kernel, and so is its own
  derivative, which training's loss on forces takes (:class:`_RunBackward`,
  ``cpp/kernels/message_backward.cpp``): per-edge data stays in scratch rows instead of being
  written out as (E, rows, channels) tensors and read back by each torch operation.

TorchScript cannot run a custom autograd function, so scripted models differentiate
:meth:`TensorProductSum.message_sum` with autograd: the same function, with more memory.
"""

import importlib
import inspect
import itertools
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from e3nn import o3
from torch.autograd.function import once_differentiable
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from .radial import RadialMLP, radial_mlp_hidden, radial_mlp_hidden_backward


class InputIrrep(NamedTuple):
    """Where one irrep of the node features lies in ``x``: ``x[:, offset : offset + mul * dim]``."""

    offset: int
    mul: int
    dim: int  # 2l+1


class PathGroup(NamedTuple):
    """The paths of one (input irrep, output dimension) pair, computed together."""

    input_irrep: int  # index into irreps_in (and TensorProductSum.inputs)
    mul: int  # channels of that irrep
    d1: int  # its 2l+1
    a_column: int  # first column of the group's block of A in the coefficients
    weight_column: int  # first column of its weights in W, in group order
    num_paths: int
    d3: int  # 2l+1 of every path's output


class PathRun(NamedTuple):
    """The groups of one input irrep (consecutive in ``groups``), contracted together in eager code."""

    input_irrep: int
    first: int  # its first group
    end: int  # one past its last group
    d1: int
    rows: int  # sum over its groups of paths * d3: the rows of its per-edge contractions
    a_column: int  # first column of its block of A in the run coefficients
    weight_column: int  # first column of its weights in W, in group order
    num_paths: int
    row_offset: int  # first of its rows in ``row_paths``


class TensorProductSum(torch.nn.Module):
    """Neighbour sum of the radial-weighted "uvu" tensor products of NequIP's interaction block.

    Args:
        irreps_in: node features ``x``; every irrep's channels pair with one weight per path.
        irreps_edge_sh: edge harmonics ``Y``, one channel per irrep.
        irreps_out: the irreps that paths may produce; paths to other irreps are left out.

    Paths are those of e3nn's convention (every ``l_3`` in ``l_1 (x) l_2`` that ``irreps_out``
    contains), and the output layout is that of the corresponding e3nn tensor product: one
    ``(mul, 2l_3+1)`` block per path, blocks sorted by irrep (``self.irreps_mid``). The weight
    matrix ``W`` has ``self.weight_numel`` columns: ``mul`` per path, in path order.
    """

    # one group per (input irrep, output dimension)
    groups: List[PathGroup]
    # for each group, the output block of each of its paths
    group_blocks: List[List[int]]
    block_sizes: List[int]
    # one per irrep of irreps_in
    inputs: List[InputIrrep]
    # one per input irrep that some path reads
    runs: List[PathRun]

    def __init__(self, irreps_in: o3.Irreps, irreps_edge_sh: o3.Irreps, irreps_out: o3.Irreps, radial_sizes: List[int]):
        super().__init__()
        irreps_in, irreps_edge_sh, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_edge_sh), o3.Irreps(irreps_out)
        if any(mul != 1 for mul, _ in irreps_edge_sh):
            raise ValueError(f"edge harmonics must have one channel per irrep, got {irreps_edge_sh}")

        # paths (input irrep, harmonic irrep, output irrep), in e3nn's order
        paths = []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_edge_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in irreps_out:
                        paths.append((i, j, ir_out))
        irreps_mid, permutation, _ = o3.Irreps([(irreps_in[i].mul, ir) for i, _, ir in paths]).sort()
        self.irreps_in, self.irreps_edge_sh, self.irreps_mid = irreps_in, irreps_edge_sh, irreps_mid
        self.weight_numel = sum(irreps_in[i].mul for i, _, _ in paths)
        self.block_sizes = [mul * ir.dim for mul, ir in irreps_mid]
        self.inputs = [InputIrrep(s.start, mul, ir.dim) for s, (mul, ir) in zip(irreps_in.slices(), irreps_in)]
        weight_offsets = [sum(irreps_in[i].mul for i, _, _ in paths[:k]) for k in range(len(paths))]
        sh_slices = irreps_edge_sh.slices()

        keys: List[Tuple[int, int]] = []
        for i, _, ir_out in paths:
            if (i, ir_out.dim) not in keys:
                keys.append((i, ir_out.dim))
        blocks, weight_columns = [], []
        self.groups, self.group_blocks = [], []
        column = 0
        for i, d3 in keys:
            members = [k for k, (i_k, _, ir) in enumerate(paths) if (i_k, ir.dim) == (i, d3)]
            mul, ir1 = irreps_in[i]
            d1 = ir1.dim
            # columns (i, path, k) of A = Y @ coefficients
            block = torch.zeros(irreps_edge_sh.dim, d1, len(members), d3, dtype=torch.float64)
            for q, k in enumerate(members):
                _, j, ir3 = paths[k]
                # e3nn's "component" normalisation; every path has its own output block
                cg = o3.wigner_3j(ir1.l, irreps_edge_sh[j].ir.l, ir3.l, dtype=torch.float64) * math.sqrt(ir3.dim)
                block[sh_slices[j], :, q, :] = cg.permute(1, 0, 2)
            blocks.append(block.reshape(irreps_edge_sh.dim, -1))
            self.groups.append(PathGroup(i, mul, d1, column, len(weight_columns), len(members), d3))
            self.group_blocks.append([permutation[k] for k in members])
            weight_columns += [weight_offsets[k] + u for k in members for u in range(mul)]
            column += d1 * len(members) * d3
        coefficients = torch.cat(blocks, dim=1) if blocks else torch.zeros(irreps_edge_sh.dim, 0, dtype=torch.float64)
        # Runs: eager code contracts all groups of an input irrep with one bmm per edge-batched
        # product, twice as fast as one per group for the benchmark model (the per-edge matrices,
        # at most 5 x 15, are then larger). A run's columns of A are ordered (i, group, path, k).
        self.runs, run_blocks, row_paths = [], [], []
        column = 0
        for input_irrep, run_groups in itertools.groupby(range(len(self.groups)), lambda h: self.groups[h].input_irrep):
            members = list(run_groups)
            run_group_list = [self.groups[h] for h in members]
            widths = [group.num_paths * group.d3 for group in run_group_list]
            d1 = run_group_list[0].d1
            run_blocks.append(torch.cat([blocks[h].view(-1, d1, w) for h, w in zip(members, widths)], dim=2).flatten(1))
            num_paths = sum(group.num_paths for group in run_group_list)
            self.runs.append(
                PathRun(
                    input_irrep, members[0], members[-1] + 1, d1, sum(widths), column,
                    run_group_list[0].weight_column, num_paths, len(row_paths),
                )
            )
            # the path (numbered within the run) of each row
            first_path = 0
            for group in run_group_list:
                row_paths += [first_path + q for q in range(group.num_paths) for _ in range(group.d3)]
                first_path += group.num_paths
            column += d1 * sum(widths)
        run_coefficients = torch.cat(run_blocks, dim=1) if run_blocks else coefficients
        # derived from the irreps alone, so not in the state_dict; .to(dtype) sets their precision
        self.register_buffer("coefficients", coefficients, persistent=False)
        self.register_buffer("run_coefficients", run_coefficients, persistent=False)
        self.register_buffer("row_paths", torch.tensor(row_paths, dtype=torch.long), persistent=False)
        # W's columns in group order: each group's weights are one contiguous slice
        self.register_buffer("weight_columns", torch.tensor(weight_columns, dtype=torch.long), persistent=False)
        self.radial_mlp = RadialMLP(list(radial_sizes) + [self.weight_numel])

    def forward(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """``x`` (N, irreps_in.dim), ``edge_sh`` (E, irreps_edge_sh.dim), ``edge_radial`` (E, radial_sizes[0]),
        centre and neighbour indices (E,) -> (N, irreps_mid.dim)."""
        weights = self.radial_mlp.scaled_weights()
        if not torch.jit.is_scripting():
            # TorchScript skips this branch: it cannot run a custom autograd function
            return _MessageSum.apply(self, x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights)
        return self.message_sum(x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)

    def message_sum(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        weights: List[torch.Tensor],
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """The node sums (N, irreps_mid.dim), given the radial MLP's scaled weights."""
        num_nodes = x.shape[0]
        radial_hidden = radial_mlp_hidden(edge_radial, weights[:-1], self.radial_mlp.activation_scale)[-1]
        weight = weights[-1].index_select(1, self.weight_columns)
        blocks: List[torch.Tensor] = [x] * len(self.block_sizes)  # every entry is replaced
        by_run = contract_by_run()
        for run in self.runs:
            # the gathered features of the run's input irrep
            x_neighbor = self._channels_last(x, run.input_irrep).index_select(0, edge_neighbor)
            group_products: List[torch.Tensor] = []
            if by_run:
                run_products = self.batched_matmul(self._run_a(edge_sh, run).transpose(1, 2), x_neighbor)
                group_products = self._split_by_group(run_products, run)
            for g in range(run.first, run.end):
                group = self.groups[g]
                if by_run:
                    products = group_products[g - run.first]
                else:
                    products = self._products(x_neighbor, self._a(edge_sh, g), g)
                message = products * self._weights(radial_hidden, weight, g)
                summed = _neighbor_sum(message.flatten(1), edge_center, num_nodes)
                summed = summed.view(num_nodes, group.num_paths, group.d3, group.mul)
                for q, block in enumerate(self.group_blocks[g]):
                    blocks[block] = summed[:, q].transpose(1, 2).reshape(num_nodes, group.mul * group.d3)
        return torch.cat(blocks, dim=1)

    def _channels_last(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Input irrep ``i`` of the node features as (N, 2l+1, mul): channels innermost, so that
        per-edge products are vectorised over channels."""
        irrep = self.inputs[i]
        x_irrep = x.narrow(1, irrep.offset, irrep.mul * irrep.dim).view(x.shape[0], irrep.mul, irrep.dim)
        return x_irrep.transpose(1, 2).contiguous()

    def _a(self, edge_sh: torch.Tensor, g: int) -> torch.Tensor:
        """A for a group's paths: (E, d1, paths * d3)."""
        group = self.groups[g]
        columns = group.d1 * group.num_paths * group.d3
        a = edge_sh @ self.coefficients.narrow(1, group.a_column, columns)
        return a.view(-1, group.d1, group.num_paths * group.d3)

    def _run_a(self, edge_sh: torch.Tensor, run: PathRun) -> torch.Tensor:
        """A for all the paths of a run: (E, d1, rows)."""
        a = edge_sh @ self.run_coefficients.narrow(1, run.a_column, run.d1 * run.rows)
        return a.view(-1, run.d1, run.rows)

    def _run_rows(self, node_values: List[torch.Tensor], run: PathRun) -> torch.Tensor:
        """The blocks of a run's paths from per-block node values (N, mul * d3) as (N, rows, mul), channels last."""
        parts: List[torch.Tensor] = []
        for g in range(run.first, run.end):
            group = self.groups[g]
            for block in self.group_blocks[g]:
                parts.append(node_values[block].view(-1, group.mul, group.d3).transpose(1, 2))
        return torch.cat(parts, dim=1)

    def _split_by_group(self, run_values: torch.Tensor, run: PathRun) -> List[torch.Tensor]:
        """A run's (E, rows, mul) per-edge values as its groups' (E, paths, d3, mul). One split:
        differentiated (training differentiates the backward), it gives one concatenation,
        where a slice per group would give each a zero-filled tensor of the run's size."""
        groups = [self.groups[g] for g in range(run.first, run.end)]
        parts = run_values.split([group.num_paths * group.d3 for group in groups], dim=1)
        return [part.view(-1, group.num_paths, group.d3, group.mul) for part, group in zip(parts, groups)]

    def _weights(self, radial_hidden: torch.Tensor, weight: torch.Tensor, g: int) -> torch.Tensor:
        """A group's per-edge path weights: (E, paths, 1, mul)."""
        group = self.groups[g]
        weights = radial_hidden @ weight.narrow(1, group.weight_column, group.num_paths * group.mul)
        return weights.view(-1, group.num_paths, 1, group.mul)

    def _products(self, x_neighbor: torch.Tensor, a: torch.Tensor, g: int) -> torch.Tensor:
        """sum_i x[j(e), i, u] A[e, i, path, k] for a group: (E, paths, d3, mul)."""
        group = self.groups[g]
        return self.batched_matmul(a.transpose(1, 2), x_neighbor).view(-1, group.num_paths, group.d3, group.mul)

    def _weight_gradient(self, grad_message: torch.Tensor, x_neighbor: torch.Tensor, a: torch.Tensor, g: int) -> torch.Tensor:
        """The gradient of a group's messages by their path weights, (E, paths * mul):
        sum over i and k of grad[e, path, k, u] x[j(e), i, u] A[e, i, path, k].

        One sum over (i, k), which inductor fuses whole (the backward contracts one group at a
        time only while traced for AOTInductor). As two sums, the products' over i and then over
        k, it stored the products, (E, paths, d3, mul), to memory between them: for the benchmark
        model 1.9 KB per edge, the largest buffer of the call."""
        group = self.groups[g]
        num_edges = grad_message.shape[0]
        a_paths = a.view(num_edges, group.d1, group.num_paths, group.d3).transpose(1, 2)
        terms = a_paths.unsqueeze(-1) * x_neighbor.unsqueeze(1).unsqueeze(3) * grad_message.unsqueeze(2)
        return terms.sum((2, 3)).reshape(num_edges, group.num_paths * group.mul)

    def batched_matmul(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """(E, m, k) @ (E, k, n) for every edge: torch.bmm, or, while traced for AOTInductor
        (:func:`traced_for_aotinductor`), a broadcast product summed over k (the same function),
        which inductor fuses into the kernels around it instead of materialising both operands
        for a bmm call (2x the time, more memory)."""
        # TorchScript skips this branch (a condition of is_scripting() alone is decided when scripting)
        if not torch.jit.is_scripting():
            if traced_for_aotinductor():
                # inductor vectorises along the output's last axis: keep the channels there
                if left.shape[2] > right.shape[2]:
                    # contracting over the channels: they are the sum's (last) axis
                    return (left.unsqueeze(2) * right.transpose(1, 2).unsqueeze(1)).sum(-1)
                return (left.transpose(1, 2).unsqueeze(-1) * right.unsqueeze(2)).sum(1)
        if left.shape[2] == 1:
            # an outer product per edge (scalar inputs): a broadcast product is 3x faster than bmm
            return left * right
        return torch.bmm(left, right)


def traced_for_aotinductor() -> bool:
    """Whether the model is being traced into an aten graph, as compile/aotinductor.py does
    with ``make_fx`` before exporting (the project's only tracer).

    ``torch.compiler.is_exporting()`` is False there: torch.export only runs later, on the
    already traced graph. What is active exactly while ``make_fx`` runs the Python code
    (including the autograd engine's backward, which it records) is its proxy dispatch mode;
    eager calls never see it and TorchScript skips the check. torch.export of the model itself
    traces through the same mode, so it would take the same branch.
    """
    return get_proxy_mode() is not None


def contract_by_run() -> bool:
    """Whether a run's groups are contracted together (eager and TorchScript), or one group at a
    time (traced for AOTInductor: inductor fuses each group's contractions into the kernels
    around them, and a run's per-edge products would all be live at once, more memory)."""
    if not torch.jit.is_scripting():
        if traced_for_aotinductor():
            return False
    return True


def _neighbor_sum(values: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum the rows of ``values`` (E, C) into (num_nodes, C) by ``index`` (E,).

    A scatter-add with the index expanded along the row: PyTorch's CPU kernel for that case
    sorts the index once and sums each node's rows without atomics.
    """
    out = torch.zeros((num_nodes, values.shape[1]), dtype=values.dtype, device=values.device)
    return out.scatter_add(0, index.unsqueeze(1).expand_as(values), values)


class _MessageSum(torch.autograd.Function):
    """:meth:`TensorProductSum.message_sum` with a backward that recomputes per-edge data group
    by group rather than keeping it.

    The backward is written in differentiable operations, so training (which differentiates
    forces) can take second derivatives through it.
    """

    @staticmethod
    def forward(ctx, module, x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights):
        ctx.module = module
        ctx.save_for_backward(x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights)
        return module.message_sum(x, edge_sh, edge_radial, list(weights), edge_center, edge_neighbor)

    @staticmethod
    def backward(ctx, grad_out):
        module: TensorProductSum = ctx.module
        x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights = ctx.saved_tensors
        num_nodes, num_edges = x.shape[0], edge_sh.shape[0]
        needs_grad = dict(zip(_APPLY_ARGUMENTS, ctx.needs_input_grad))
        need_x, need_sh, need_radial = needs_grad["x"], needs_grad["edge_sh"], needs_grad["edge_radial"]
        need_weights = any(ctx.needs_input_grad[len(_APPLY_ARGUMENTS) :]) and _gradient_used(weights)
        need_hidden = need_radial or need_weights
        scale = module.radial_mlp.activation_scale
        # the radial MLP again: its per-edge activations were not kept
        hidden = radial_mlp_hidden(edge_radial, weights[:-1], scale)
        radial_hidden = hidden[-1]
        weight = weights[-1].index_select(1, module.weight_columns)
        grad_blocks = grad_out.split(module.block_sizes, dim=1)

        # per input irrep (channels last, summed over each neighbour's edges); irreps no path reads get no gradient
        grad_x_parts: List[Optional[torch.Tensor]] = [None] * len(module.inputs)
        grad_sh = torch.zeros_like(edge_sh) if need_sh else None
        grad_hidden = torch.zeros_like(radial_hidden) if need_hidden else None
        grad_weight_parts: List[torch.Tensor] = []
        by_run = contract_by_run()
        by_kernel = by_run and x.device.type == "cpu" and use_cpu_kernels()
        for run in module.runs:
            i, d1 = run.input_irrep, run.d1
            if by_kernel:
                # the run's per-edge work in one CPU kernel (and its derivative in another)
                mul = module.inputs[i].mul
                run_weight = weight.narrow(1, run.weight_column, run.num_paths * mul)
                grad_w, grad_a, grad_x_edge = _RunBackward.apply(
                    module._run_a(edge_sh, run),
                    module._channels_last(x, i),
                    module._run_rows(grad_blocks, run),
                    (radial_hidden @ run_weight).view(num_edges, run.num_paths, mul),
                    edge_center,
                    edge_neighbor,
                    module.row_paths.narrow(0, run.row_offset, run.rows),
                )
                if need_hidden:
                    grad_w = grad_w.view(num_edges, run.num_paths * mul)
                    if grad_hidden is not None:
                        grad_hidden = grad_hidden + grad_w @ run_weight.t()
                    if need_weights:
                        grad_weight_parts.append(radial_hidden.t() @ grad_w)
                if grad_sh is not None:
                    coefficients = module.run_coefficients.narrow(1, run.a_column, d1 * run.rows)
                    grad_sh = grad_sh + grad_a.view(num_edges, d1 * run.rows) @ coefficients.t()
                if need_x:
                    grad_x_parts[i] = _neighbor_sum(grad_x_edge.flatten(1), edge_neighbor, num_nodes)
                continue
            x_neighbor = module._channels_last(x, i).index_select(0, edge_neighbor)  # (E, d1, mul)
            run_a: Optional[torch.Tensor] = module._run_a(edge_sh, run) if by_run else None  # (E, d1, rows)
            group_products: List[torch.Tensor] = []
            if run_a is not None and need_hidden:
                run_products = module.batched_matmul(run_a.transpose(1, 2), x_neighbor)  # (E, rows, mul)
                group_products = module._split_by_group(run_products, run)
            run_weighted: List[torch.Tensor] = []
            for g in range(run.first, run.end):
                group = module.groups[g]
                mul, num_paths, d3 = group.mul, group.num_paths, group.d3
                # the output gradient of the group's paths, channels last, at each edge's centre
                grad_sums = torch.stack(
                    [grad_blocks[block].view(num_nodes, mul, d3).transpose(1, 2) for block in module.group_blocks[g]],
                    dim=1,
                )
                grad_message = grad_sums.index_select(0, edge_center)  # (E, paths, d3, mul)
                a = module._a(edge_sh, g) if run_a is None else None  # (E, d1, paths * d3)
                if need_hidden:
                    # d/dw: sum over k of grad * (x . A)
                    if group_products:
                        products = group_products[g - run.first]
                        grad_w = (grad_message * products).sum(2).reshape(num_edges, num_paths * mul)
                    else:
                        grad_w = module._weight_gradient(grad_message, x_neighbor, a, g)  # (E, paths * mul)
                    if grad_hidden is not None:
                        grad_hidden = grad_hidden + grad_w @ weight.narrow(1, group.weight_column, num_paths * mul).t()
                    if need_weights:
                        grad_weight_parts.append(radial_hidden.t() @ grad_w)
                weighted = grad_message * module._weights(radial_hidden, weight, g)  # (E, paths, d3, mul)
                rows = weighted.view(num_edges, num_paths * d3, mul)
                if a is None:
                    run_weighted.append(rows)
                    continue
                # one group at a time, so that no group's per-edge data waits for another's
                if grad_sh is not None:
                    # d/dA: sum over channels; then through A = Y @ coefficients
                    grad_a = module.batched_matmul(x_neighbor, rows.transpose(1, 2))
                    coefficients = module.coefficients.narrow(1, group.a_column, d1 * num_paths * d3)
                    grad_sh = grad_sh + grad_a.reshape(num_edges, d1 * num_paths * d3) @ coefficients.t()
                if need_x:
                    # d/dx: sum over paths and k at each edge, then over each neighbour's edges
                    grad_x_edge = module.batched_matmul(a, rows)  # (E, d1, mul)
                    summed = _neighbor_sum(grad_x_edge.flatten(1), edge_neighbor, num_nodes)
                    previous = grad_x_parts[i]
                    grad_x_parts[i] = summed if previous is None else previous + summed
            if run_a is not None:
                # the run's groups together: (E, rows, mul)
                weighted = torch.cat(run_weighted, dim=1) if len(run_weighted) > 1 else run_weighted[0]
                if grad_sh is not None:
                    grad_a = module.batched_matmul(x_neighbor, weighted.transpose(1, 2))  # (E, d1, rows)
                    coefficients = module.run_coefficients.narrow(1, run.a_column, d1 * run.rows)
                    grad_sh = grad_sh + grad_a.reshape(num_edges, d1 * run.rows) @ coefficients.t()
                if need_x:
                    grad_x_edge = module.batched_matmul(run_a, weighted)  # (E, d1, mul)
                    grad_x_parts[i] = _neighbor_sum(grad_x_edge.flatten(1), edge_neighbor, num_nodes)

        grad_x = None
        if need_x:
            parts: List[torch.Tensor] = []
            for part, irrep in zip(grad_x_parts, module.inputs):
                # back from channels last to e3nn's (mul, 2l+1) layout
                mul, dim = irrep.mul, irrep.dim
                parts.append(
                    x.new_zeros(num_nodes, mul * dim)
                    if part is None
                    else part.view(num_nodes, dim, mul).transpose(1, 2).reshape(num_nodes, mul * dim)
                )
            grad_x = torch.cat(parts, dim=1)
        grad_radial, grad_weights = None, [None] * len(weights)
        if grad_hidden is not None:
            if need_weights:
                # back from group order to W's column order
                grad_weights[-1] = torch.zeros_like(weight).index_copy(
                    1, module.weight_columns, torch.cat(grad_weight_parts, dim=1)
                )
            grad_radial, grad_hidden_weights = radial_mlp_hidden_backward(
                grad_hidden, edge_radial, weights[:-1], hidden[:-1], scale, need_weights
            )
            if need_weights:
                grad_weights[:-1] = grad_hidden_weights
        grads = {"x": grad_x, "edge_sh": grad_sh, "edge_radial": grad_radial if need_radial else None}
        return (*(grads.get(name) for name in _APPLY_ARGUMENTS), *grad_weights)


class _RunBackward(torch.autograd.Function):
    """The first derivatives of one run's node sums, by the CPU kernel ``nequip::message_backward``
    (cpp/kernels/message_backward.cpp, which states the formulas), differentiable once more by
    ``nequip::message_double_backward``: training's loss on forces differentiates them.

    Inputs: the run's A (E, d1, rows), its input irrep's node features (N, d1, mul) and output
    gradients (N, rows, mul), both channels last, the path weights (E, paths, mul), centre and
    neighbour indices and the path of each row. Outputs, per edge: the gradients by the path
    weights (E, paths, mul), by A (E, d1, rows) and by the neighbour's features (E, d1, mul).
    """

    @staticmethod
    def forward(ctx, a, x, g, w, center, neighbor, row_path):
        a, x, g, w, center, neighbor = (t.contiguous() for t in (a, x, g, w, center, neighbor))
        ctx.save_for_backward(a, x, g, w, center, neighbor, row_path)
        return torch.ops.nequip.message_backward(a, x, g, w, center, neighbor, row_path)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w, grad_a, grad_x):
        a, x, g, w, center, neighbor, row_path = ctx.saved_tensors
        # outputs that nothing used have no cotangent: zeros of their shapes
        shapes = (w.shape, a.shape, (a.shape[0], a.shape[1], x.shape[2]))
        cotangents = [
            a.new_zeros(shape) if grad is None else grad.contiguous() for grad, shape in zip((grad_w, grad_a, grad_x), shapes)
        ]
        da, dx_edge, dg_edge, dw = torch.ops.nequip.message_double_backward(
            a, x, g, w, center, neighbor, row_path, *cotangents
        )
        num_nodes = x.shape[0]
        dx = _neighbor_sum(dx_edge.flatten(1), neighbor, num_nodes).view(x.shape)
        dg = _neighbor_sum(dg_edge.flatten(1), center, num_nodes).view(g.shape)
        return da, dx, dg, dw, None, None, None


_cpu_kernels: Optional[bool] = None


def use_cpu_kernels() -> bool:
    """Whether eager message passing on CPU runs its backward by the kernels of ``nequip._kernels``:
    True where that extension (built with the package) loads. The module is imported by name,
    so that a package's interned copy of this code uses the installed kernels too; where it is
    missing (a package loaded without nequip installed), the same function runs as torch
    operations."""
    global _cpu_kernels
    if _cpu_kernels is None:
        try:
            importlib.import_module("nequip._kernels")
            _cpu_kernels = True
        except ImportError:
            _cpu_kernels = False
    return _cpu_kernels


def _gradient_used(tensors: List[torch.Tensor]) -> bool:
    """Whether the backward pass running now wants the gradient of any of ``tensors``.

    ``ctx.needs_input_grad`` says only which inputs require grad. Training's force pass,
    ``autograd.grad(energy, positions, create_graph=True)``, runs the backward with radial
    weights that require grad but whose gradients it never uses (the loss's own backward takes
    them later): asked here, the engine says whether it will reach them. Where it cannot tell
    (another torch), they are computed."""
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    if will_execute is None:
        return True
    for tensor in tensors:
        if not tensor.requires_grad:
            continue
        # a leaf's gradient goes to its accumulator, the node behind a view of it
        node = tensor.grad_fn if tensor.grad_fn is not None else tensor.view_as(tensor).grad_fn.next_functions[0][0]
        try:
            if will_execute(node):
                return True
        except RuntimeError:  # not inside a backward pass of the engine
            return True
    return False


# _MessageSum.forward's named arguments after ctx, in order (the radial MLP's weights follow):
# backward reads ``needs_input_grad`` and returns its gradients by these names
_APPLY_ARGUMENTS = tuple(inspect.signature(_MessageSum.forward).parameters)[1:-1]
