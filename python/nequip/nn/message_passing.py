r"""NequIP's message: a weighted "uvu" tensor product of neighbor features and edge harmonics,
summed over each center's edges, computed without keeping per-edge messages.

.. math::
    M_{n,u,k}^{(p)} = \sum_{e:\ c(e) = n} w_{e,p,u} \sum_{i} x_{j(e),u,i}\, A^{(p)}_{e,i,k},
    \qquad A^{(p)}_{e,i,k} = \alpha_p \sum_{j} C^{(p)}_{ijk}\, Y_{e,j}, \qquad
    w_e = h_e W

for every path ``p = (l_1, l_2 -> l_3)``: ``x`` node features, ``Y`` edge spherical harmonics,
``C`` Clebsch-Gordan coefficients, ``alpha_p`` e3nn's "component" normalisation, ``h`` the
radial MLP's last hidden layer and ``W`` its (scaled) output weights. This is e3nn's
``o3.TensorProduct(..., "uvu", shared_weights=False)`` applied to ``x[j(e)]``, then summed over
each center's edges (NequIP's interaction, Batzner et al. 2022), organised for speed and memory:

* paths are grouped by input irrep and output dimension; for each group, ``A`` (a few numbers
  per edge, shared by all channels ``u``) and ``w`` are small matmuls, and the message is a
  product over at most five terms, vectorised over channels (features are channels-last here);
  the reference contracts all groups of one input irrep (a :class:`PathRun`) with one ``bmm``;
* the neighbor sum is a scatter-add with an expanded index, which PyTorch's CPU kernel does by
  sorting the index once (no atomics), eager and in AOTInductor files alike;
* the backward pass (:class:`_MessageSum`) recomputes ``A``, ``w`` and the gathered features one
  input irrep at a time instead of keeping them: per edge it keeps only ``Y`` and ``h``. No tensor of
  all the messages of an edge, ``(E, paths * channels * (2l+1))``, ever exists, which is what
  lets forces and stress of large systems fit in memory.

**Backends.** The same function is computed in one of four ways, named by the module's
``message_backend`` and chosen once: by default when the module is built or loaded
(:func:`default_message_backend`), by the compiler when it traces the model
(:func:`set_message_backend`). ``torch`` is the reference; every other backend is tested against
it (tests/model/test_message_passing.py), and it against e3nn.

* ``torch``: torch operations on any device; a run's groups contracted by one ``bmm``, the
  backward above written in differentiable operations (training differentiates forces).
* ``cpu_kernels``: the reference, but each run's node sums by one C++ kernel, its backward by
  another and that one's derivative by a third (:class:`CpuKernelBackend`, :class:`_RunBackward`,
  ``cpp/kernels/message_passing.cpp``): per-edge data stays in scratch rows instead of being
  written out as (E, rows, channels) tensors and read back by each torch operation. The kernels
  are CPU code: tensors on another device take the reference's path. The default where the installed ``nequip._kernels`` provides the kernels this code calls.
* ``inductor``: for graphs traced with ``make_fx`` and compiled by Inductor (compile/aotinductor.py
  traces with it): one group at a time, per-edge contractions as broadcast products and sums,
  which Inductor fuses into the kernels around them instead of materialising bmm operands.
* ``autograd``: the forward alone (:meth:`TensorProductSum.message_sum`), differentiated by
  autograd, which keeps per-edge data (more memory).

TorchScript cannot run a Python autograd function, so a scripted module ignores the attribute:
scripted inside :func:`scripted_with_kernels` (a CPU ``.pth`` made by nequip.compile), it calls
the forward kernel, which the kernels' C++ autograd functions differentiate
(cpp/kernels/message_passing_autograd.cpp); otherwise it runs ``autograd``.
"""

import contextlib
import importlib
import inspect
import itertools
import math
import warnings
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch
from e3nn import o3
from torch.autograd.function import once_differentiable

from ..utils import torch_internals
from ..utils.torch_internals import registered_schema
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
    """Neighbor sum of the radial-weighted "uvu" tensor products of NequIP's interaction block.

    Args:
        irreps_in: node features ``x``; every irrep's channels pair with one weight per path.
        irreps_edge_sh: edge harmonics ``Y``, one channel per irrep.
        irreps_out: the irreps that paths may produce; paths to other irreps are left out.

    Paths are those of e3nn's convention (every ``l_3`` in ``l_1 (x) l_2`` that ``irreps_out``
    contains), and the output layout is that of the corresponding e3nn tensor product: one
    ``(mul, 2l_3+1)`` block per path, blocks sorted by irrep (``self.irreps_mid``). The weight
    matrix ``W`` has ``self.weight_numel`` columns: ``mul`` per path, in path order.

    ``self.message_backend`` names how it is computed (one of :data:`MESSAGE_BACKENDS`, see the
    module's docstring): :func:`default_message_backend` when built, checked again when loaded
    (a backend that cannot run where the module is unpickled becomes the reference),
    :meth:`use_message_backend` or :func:`set_message_backend` to change it.
    """

    # a scripted module runs the autograd backend: the name is no part of TorchScript's code
    __jit_ignored_attributes__ = ["message_backend"]
    message_backend: str

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
        # product, faster than one per group (the per-edge matrices, at most 5 x 15, are then
        # larger; docs/benchmarks.md, "Where the numbers in code comments went"). A run's
        # columns of A are ordered (i, group, path, k).
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
        self.message_backend = default_message_backend()
        # what a scripted module computes by: the kernels where KERNEL_VERSION, else autograd
        # (set while scripting by scripted_with_kernels)
        self.scripted_kernels = None

    def use_message_backend(self, name: str) -> None:
        """Compute by backend ``name`` from now on; a ValueError names a backend that does not
        exist or cannot run here (``cpu_kernels`` without the installed kernels it calls)."""
        if name not in MESSAGE_BACKENDS:
            raise ValueError(f"unknown message passing backend {name!r}: one of {', '.join(MESSAGE_BACKENDS)}")
        if name == CPU_KERNELS:
            missing = cpu_kernels_missing()
            if missing is not None:
                raise ValueError(
                    f"the message passing backend {CPU_KERNELS!r} cannot run here: {missing}; use {TORCH!r}"
                )
        self.message_backend = name

    def __setstate__(self, state) -> None:
        # Loading (unpickling, a package's model included) chooses again where the choice made
        # when saved cannot run here: the kernels missing, or of another version than this code
        # calls (a package's own copy of this code checks against the installed nequip._kernels).
        super().__setstate__(state)
        self.__dict__.setdefault("scripted_kernels", None)
        if self.__dict__.get("message_backend", CPU_KERNELS) == CPU_KERNELS:
            missing = cpu_kernels_missing()
            if missing is not None and _kernels_installed():
                warnings.warn(f"the message passing runs as torch operations (slower): {missing}")
            self.message_backend = TORCH if missing is not None else CPU_KERNELS

    def forward(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """``x`` (N, irreps_in.dim), ``edge_sh`` (E, irreps_edge_sh.dim), ``edge_radial`` (E, radial_sizes[0]),
        center and neighbor indices (E,) -> (N, irreps_mid.dim)."""
        weights = self.radial_mlp.scaled_weights()
        if not torch.jit.is_scripting():
            # TorchScript skips this branch: it cannot run a custom autograd function
            backend = _BACKENDS[self.message_backend]
            return backend.message_sum(self, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)
        # decided when scripting: a None attribute's branch is not compiled (scripted_with_kernels)
        if self.scripted_kernels is not None:
            return self.kernel_node_sums(x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)
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
        radial_hidden = radial_mlp_hidden(edge_radial, weights[:-1])[-1]
        weight = weights[-1].index_select(1, self.weight_columns)
        blocks: List[torch.Tensor] = [x] * len(self.block_sizes)  # every entry is replaced
        by_run = self.contracts_by_run()
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
                self._place_group_sums(blocks, g, summed.view(num_nodes, group.num_paths, group.d3, group.mul))
        return torch.cat(blocks, dim=1)

    def kernel_node_sums(
        self,
        x: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        weights: List[torch.Tensor],
        edge_center: torch.Tensor,
        edge_neighbor: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`message_sum`, each run's node sums by the CPU kernel ``nequip::message_forward_v1``
        (the ``_v1`` is :data:`KERNEL_VERSION`). Differentiable: by :class:`_MessageSum` in eager
        code, by the kernels' C++ autograd functions in TorchScript
        (cpp/kernels/message_passing_autograd.cpp)."""
        num_edges = edge_sh.shape[0]
        radial_hidden = radial_mlp_hidden(edge_radial, weights[:-1])[-1]
        weight = weights[-1].index_select(1, self.weight_columns)
        edge_center, edge_neighbor = edge_center.contiguous(), edge_neighbor.contiguous()
        blocks: List[torch.Tensor] = [x] * len(self.block_sizes)  # every entry is replaced
        for run in self.runs:
            mul = self.inputs[run.input_irrep].mul
            run_weight = weight.narrow(1, run.weight_column, run.num_paths * mul)
            summed = torch.ops.nequip.message_forward_v1(
                self._run_a(edge_sh, run).contiguous(),
                self._channels_last(x, run.input_irrep),
                (radial_hidden @ run_weight).view(num_edges, run.num_paths, mul),
                edge_center,
                edge_neighbor,
                self.row_paths.narrow(0, run.row_offset, run.rows),
            )  # (N, rows, mul)
            for g, group_sums in zip(range(run.first, run.end), self._split_by_group(summed, run)):
                self._place_group_sums(blocks, g, group_sums)
        return torch.cat(blocks, dim=1)

    def _place_group_sums(self, blocks: List[torch.Tensor], g: int, summed: torch.Tensor) -> None:
        """Group ``g``'s node sums, (N, paths, d3, mul) channels last, into its paths' output
        blocks (N, mul * d3) of e3nn's layout."""
        group = self.groups[g]
        for q, block in enumerate(self.group_blocks[g]):
            blocks[block] = summed[:, q].transpose(1, 2).reshape(summed.shape[0], group.mul * group.d3)

    def contracts_by_run(self) -> bool:
        """Whether a run's groups are contracted together (every backend but ``inductor``), or one
        group at a time (``inductor``: Inductor fuses each group's contractions into the kernels
        around them, and a run's per-edge products would all be live at once, more memory)."""
        # TorchScript skips this branch (a condition of is_scripting() alone is decided when scripting)
        if not torch.jit.is_scripting():
            return self.message_backend != INDUCTOR
        return True

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

        One sum over (i, k), which inductor fuses whole (only the ``inductor`` backend contracts
        one group at a time). As two sums, the products' over i and then over k, it stored the
        products, (E, paths, d3, mul), to memory between them: for the benchmark model the largest
        buffer of the call."""
        group = self.groups[g]
        num_edges = grad_message.shape[0]
        a_paths = a.view(num_edges, group.d1, group.num_paths, group.d3).transpose(1, 2)
        terms = a_paths.unsqueeze(-1) * x_neighbor.unsqueeze(1).unsqueeze(3) * grad_message.unsqueeze(2)
        return terms.sum((2, 3)).reshape(num_edges, group.num_paths * group.mul)

    def batched_matmul(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """(E, m, k) @ (E, k, n) for every edge: torch.bmm, or, by the ``inductor`` backend, a
        broadcast product summed over k (the same function), which inductor fuses into the
        kernels around it instead of materialising both operands for a bmm call (more time, more
        memory)."""
        # TorchScript skips this branch (a condition of is_scripting() alone is decided when scripting)
        if not torch.jit.is_scripting():
            if self.message_backend == INDUCTOR:
                # inductor vectorises along the output's last axis: keep the channels there
                if left.shape[2] > right.shape[2]:
                    # contracting over the channels: they are the sum's (last) axis
                    return (left.unsqueeze(2) * right.transpose(1, 2).unsqueeze(1)).sum(-1)
                return (left.transpose(1, 2).unsqueeze(-1) * right.unsqueeze(2)).sum(1)
        if left.shape[2] == 1:
            # an outer product per edge (scalar inputs): a broadcast product is faster than bmm
            return left * right
        return torch.bmm(left, right)


def _neighbor_sum(values: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum the rows of ``values`` (E, C) into (num_nodes, C) by ``index`` (E,).

    A scatter-add with the index expanded along the row: PyTorch's CPU kernel for that case
    sorts the index once and sums each node's rows without atomics.
    """
    out = torch.zeros((num_nodes, values.shape[1]), dtype=values.dtype, device=values.device)
    return out.scatter_add(0, index.unsqueeze(1).expand_as(values), values)


class _MessageSum(torch.autograd.Function):
    """:meth:`TensorProductSum.message_sum` with a backward that recomputes per-edge data run by
    run (or group by group) rather than keeping it; the module's backend computes each run's part.

    The backward is written in differentiable operations, so training (which differentiates
    forces) can take second derivatives through it.
    """

    @staticmethod
    def forward(ctx, module, x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights):
        ctx.module = module
        ctx.save_for_backward(x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights)
        backend = _BACKENDS[module.message_backend]
        return backend.node_sums(module, x, edge_sh, edge_radial, list(weights), edge_center, edge_neighbor)

    @staticmethod
    def backward(ctx, grad_out):
        module: TensorProductSum = ctx.module
        x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights = ctx.saved_tensors
        needs_grad = dict(zip(_APPLY_ARGUMENTS, ctx.needs_input_grad))
        need_radial = needs_grad["edge_radial"]
        need_weights = any(ctx.needs_input_grad[len(_APPLY_ARGUMENTS) :]) and _gradient_used(weights)
        # the radial MLP again: its per-edge activations were not kept
        hidden = radial_mlp_hidden(edge_radial, weights[:-1])
        sums = _Gradients(
            module, x, edge_sh, edge_center, edge_neighbor, hidden[-1], weights[-1], grad_out,
            needs_grad["x"], needs_grad["edge_sh"], need_radial or need_weights, need_weights,
        )  # fmt: skip
        backend = _BACKENDS[module.message_backend]
        for run in module.runs:
            backend.run_backward(module, run, sums)

        grad_x = None
        if sums.need_x:
            parts: List[torch.Tensor] = []
            for part, irrep in zip(sums.x_parts, module.inputs):
                # back from channels last to e3nn's (mul, 2l+1) layout
                mul, dim = irrep.mul, irrep.dim
                parts.append(
                    x.new_zeros(sums.num_nodes, mul * dim)
                    if part is None
                    else part.view(sums.num_nodes, dim, mul).transpose(1, 2).reshape(sums.num_nodes, mul * dim)
                )
            grad_x = torch.cat(parts, dim=1)
        grad_radial, grad_weights = None, [None] * len(weights)
        if sums.hidden is not None:
            if need_weights:
                # back from group order to W's column order
                grad_weights[-1] = torch.zeros_like(sums.weight).index_copy(
                    1, module.weight_columns, torch.cat(sums.weight_parts, dim=1)
                )
            grad_radial, grad_hidden_weights = radial_mlp_hidden_backward(
                sums.hidden, edge_radial, weights[:-1], hidden[:-1], need_weights
            )
            if need_weights:
                grad_weights[:-1] = grad_hidden_weights
        grads = {"x": grad_x, "edge_sh": sums.sh, "edge_radial": grad_radial if need_radial else None}
        return (*(grads.get(name) for name in _APPLY_ARGUMENTS), *grad_weights)


class _Gradients:
    """What :class:`_MessageSum`'s backward hands each run's part: the saved inputs, the output
    gradient by block, and the sums of the gradients over runs (``None`` where not wanted).

    ``x_parts``: per input irrep, the gradient by its features, channels last (N, 2l+1, mul)
    flattened, summed over each neighbor's edges; irreps that no path reads get none. ``sh``: by
    the edge harmonics. ``hidden``: by the radial MLP's last hidden layer. ``weight_parts``: by
    the last weight matrix, a block of columns per group (or run), in group order.
    """

    def __init__(self, module, x, edge_sh, edge_center, edge_neighbor, radial_hidden, last_weight, grad_out,
                 need_x: bool, need_sh: bool, need_hidden: bool, need_weights: bool):  # fmt: skip
        self.x, self.edge_sh, self.edge_center, self.edge_neighbor = x, edge_sh, edge_center, edge_neighbor
        self.num_nodes, self.num_edges = x.shape[0], edge_sh.shape[0]
        self.radial_hidden = radial_hidden
        # W's columns in group order
        self.weight = last_weight.index_select(1, module.weight_columns)
        self.grad_blocks = grad_out.split(module.block_sizes, dim=1)
        self.need_x, self.need_hidden, self.need_weights = need_x, need_hidden, need_weights
        self.x_parts: List[Optional[torch.Tensor]] = [None] * len(module.inputs)
        self.sh = torch.zeros_like(edge_sh) if need_sh else None
        self.hidden = torch.zeros_like(radial_hidden) if need_hidden else None
        self.weight_parts: List[torch.Tensor] = []

    def grad_message(self, module, g: int) -> torch.Tensor:
        """The output gradient of group ``g``'s paths at each edge's center, channels last: (E, paths, d3, mul)."""
        group = module.groups[g]
        grad_sums = torch.stack(
            [
                self.grad_blocks[block].view(self.num_nodes, group.mul, group.d3).transpose(1, 2)
                for block in module.group_blocks[g]
            ],
            dim=1,
        )
        return grad_sums.index_select(0, self.edge_center)

    def add_weight_gradient(self, grad_w: torch.Tensor, weight: torch.Tensor) -> None:
        """Add the gradient by the path weights of a group or run, (E, columns), given its columns of W."""
        if self.hidden is not None:
            self.hidden = self.hidden + grad_w @ weight.t()
        if self.need_weights:
            self.weight_parts.append(self.radial_hidden.t() @ grad_w)

    def add_a_gradient(self, grad_a: torch.Tensor, coefficients: torch.Tensor) -> None:
        """Add the gradient by A of a group or run, (E, d1, columns), through A = Y @ coefficients."""
        self.sh = self.sh + grad_a.reshape(self.num_edges, coefficients.shape[1]) @ coefficients.t()

    def add_x_gradient(self, i: int, grad_x_edge: torch.Tensor) -> None:
        """Add the gradient by input irrep ``i``'s features at each edge, (E, d1, mul), summed at the neighbors."""
        summed = _neighbor_sum(grad_x_edge.flatten(1), self.edge_neighbor, self.num_nodes)
        previous = self.x_parts[i]
        self.x_parts[i] = summed if previous is None else previous + summed


class TorchBackend:
    """``torch``, the reference: forward by :meth:`TensorProductSum.message_sum`, backward by
    :class:`_MessageSum`, each run's part in torch operations, its groups contracted together."""

    def message_sum(self, module, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor) -> torch.Tensor:
        return _MessageSum.apply(module, x, edge_sh, edge_radial, edge_center, edge_neighbor, *weights)

    def node_sums(self, module, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor) -> torch.Tensor:
        """The node sums that :class:`_MessageSum`'s forward returns (no autograd records them)."""
        return module.message_sum(x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)

    def run_backward(self, module: "TensorProductSum", run: PathRun, sums: _Gradients) -> None:
        """Add the gradients of ``run``'s node sums to ``sums``."""
        i, d1, num_edges = run.input_irrep, run.d1, sums.num_edges
        x_neighbor = module._channels_last(sums.x, i).index_select(0, sums.edge_neighbor)  # (E, d1, mul)
        run_a = module._run_a(sums.edge_sh, run)  # (E, d1, rows)
        group_products: List[torch.Tensor] = []
        if sums.need_hidden:
            run_products = module.batched_matmul(run_a.transpose(1, 2), x_neighbor)  # (E, rows, mul)
            group_products = module._split_by_group(run_products, run)
        run_weighted: List[torch.Tensor] = []
        for g in range(run.first, run.end):
            group = module.groups[g]
            mul, num_paths, d3 = group.mul, group.num_paths, group.d3
            grad_message = sums.grad_message(module, g)  # (E, paths, d3, mul)
            if sums.need_hidden:
                # d/dw: sum over k of grad * (x . A)
                grad_w = (grad_message * group_products[g - run.first]).sum(2).reshape(num_edges, num_paths * mul)
                sums.add_weight_gradient(grad_w, sums.weight.narrow(1, group.weight_column, num_paths * mul))
            weighted = grad_message * module._weights(sums.radial_hidden, sums.weight, g)  # (E, paths, d3, mul)
            run_weighted.append(weighted.view(num_edges, num_paths * d3, mul))
        # the run's groups together: (E, rows, mul)
        weighted = torch.cat(run_weighted, dim=1) if len(run_weighted) > 1 else run_weighted[0]
        if sums.sh is not None:
            # d/dA: sum over channels; then through A = Y @ coefficients
            grad_a = module.batched_matmul(x_neighbor, weighted.transpose(1, 2))  # (E, d1, rows)
            sums.add_a_gradient(grad_a, module.run_coefficients.narrow(1, run.a_column, d1 * run.rows))
        if sums.need_x:
            # d/dx: sum over paths and k at each edge, then over each neighbor's edges
            sums.add_x_gradient(i, module.batched_matmul(run_a, weighted))  # (E, d1, mul)


class InductorBackend(TorchBackend):
    """``inductor``: the reference's backward one group at a time, its per-edge contractions as
    broadcast products (:meth:`TensorProductSum.batched_matmul`), so that no group's per-edge
    data waits for another's and Inductor fuses each into the kernels around it."""

    def run_backward(self, module: "TensorProductSum", run: PathRun, sums: _Gradients) -> None:
        i, d1, num_edges = run.input_irrep, run.d1, sums.num_edges
        x_neighbor = module._channels_last(sums.x, i).index_select(0, sums.edge_neighbor)  # (E, d1, mul)
        for g in range(run.first, run.end):
            group = module.groups[g]
            mul, num_paths, d3 = group.mul, group.num_paths, group.d3
            grad_message = sums.grad_message(module, g)  # (E, paths, d3, mul)
            a = module._a(sums.edge_sh, g)  # (E, d1, paths * d3)
            if sums.need_hidden:
                grad_w = module._weight_gradient(grad_message, x_neighbor, a, g)  # (E, paths * mul)
                sums.add_weight_gradient(grad_w, sums.weight.narrow(1, group.weight_column, num_paths * mul))
            weighted = grad_message * module._weights(sums.radial_hidden, sums.weight, g)  # (E, paths, d3, mul)
            rows = weighted.view(num_edges, num_paths * d3, mul)
            if sums.sh is not None:
                grad_a = module.batched_matmul(x_neighbor, rows.transpose(1, 2))
                sums.add_a_gradient(grad_a, module.coefficients.narrow(1, group.a_column, d1 * num_paths * d3))
            if sums.need_x:
                sums.add_x_gradient(i, module.batched_matmul(a, rows))  # (E, d1, mul)


class CpuKernelBackend(TorchBackend):
    """``cpu_kernels``: on CPU each run's node sums by the kernel ``nequip::message_forward_v1``
    and its backward by :class:`_RunBackward` (the C++ kernels); tensors on another device by the
    reference."""

    def node_sums(self, module, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().node_sums(module, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)
        return module.kernel_node_sums(x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)

    def run_backward(self, module: "TensorProductSum", run: PathRun, sums: _Gradients) -> None:
        if sums.x.device.type != "cpu":
            super().run_backward(module, run, sums)
            return
        i, num_edges = run.input_irrep, sums.num_edges
        mul = module.inputs[i].mul
        run_weight = sums.weight.narrow(1, run.weight_column, run.num_paths * mul)
        grad_w, grad_a, grad_x_edge = _RunBackward.apply(
            module._run_a(sums.edge_sh, run),
            module._channels_last(sums.x, i),
            module._run_rows(sums.grad_blocks, run),
            (sums.radial_hidden @ run_weight).view(num_edges, run.num_paths, mul),
            sums.edge_center,
            sums.edge_neighbor,
            module.row_paths.narrow(0, run.row_offset, run.rows),
        )
        if sums.need_hidden:
            sums.add_weight_gradient(grad_w.view(num_edges, run.num_paths * mul), run_weight)
        if sums.sh is not None:
            sums.add_a_gradient(grad_a, module.run_coefficients.narrow(1, run.a_column, run.d1 * run.rows))
        if sums.need_x:
            sums.add_x_gradient(i, grad_x_edge)


class AutogradBackend(TorchBackend):
    """``autograd``: :meth:`TensorProductSum.message_sum` differentiated by autograd (what a
    scripted module runs)."""

    def message_sum(self, module, x, edge_sh, edge_radial, weights, edge_center, edge_neighbor) -> torch.Tensor:
        return module.message_sum(x, edge_sh, edge_radial, weights, edge_center, edge_neighbor)


class _RunBackward(torch.autograd.Function):
    """The first derivatives of one run's node sums, by the CPU kernel ``nequip::message_backward_v1``
    (cpp/kernels/message_passing.cpp, which states the formulas), differentiable once more by
    ``nequip::message_double_backward_v1``: training's loss on forces differentiates them.

    Inputs: the run's A (E, d1, rows), its input irrep's node features (N, d1, mul) and output
    gradients (N, rows, mul), both channels last, the path weights (E, paths, mul), center and
    neighbor indices and the path of each row. Outputs, per edge: the gradients by the path
    weights (E, paths, mul), by A (E, d1, rows) and by the neighbor's features (E, d1, mul).
    """

    @staticmethod
    def forward(ctx, a, x, g, w, center, neighbor, row_path):
        a, x, g, w, center, neighbor = (t.contiguous() for t in (a, x, g, w, center, neighbor))
        ctx.save_for_backward(a, x, g, w, center, neighbor, row_path)
        return _kernel("message_backward")(a, x, g, w, center, neighbor, row_path)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w, grad_a, grad_x):
        a, x, g, w, center, neighbor, row_path = ctx.saved_tensors
        # outputs that nothing used have no cotangent: zeros of their shapes
        shapes = (w.shape, a.shape, (a.shape[0], a.shape[1], x.shape[2]))
        cotangents = [
            a.new_zeros(shape) if grad is None else grad.contiguous() for grad, shape in zip((grad_w, grad_a, grad_x), shapes)
        ]
        da, dx_edge, dg_edge, dw = _kernel("message_double_backward")(
            a, x, g, w, center, neighbor, row_path, *cotangents
        )
        num_nodes = x.shape[0]
        dx = _neighbor_sum(dx_edge.flatten(1), neighbor, num_nodes).view(x.shape)
        dg = _neighbor_sum(dg_edge.flatten(1), center, num_nodes).view(g.shape)
        return da, dx, dg, dw, None, None, None



# The backends, by name (module docstring); "torch" is the reference.
TORCH, CPU_KERNELS, INDUCTOR, AUTOGRAD = "torch", "cpu_kernels", "inductor", "autograd"
_BACKENDS: Dict[str, TorchBackend] = {
    TORCH: TorchBackend(),
    CPU_KERNELS: CpuKernelBackend(),
    INDUCTOR: InductorBackend(),
    AUTOGRAD: AutogradBackend(),
}
MESSAGE_BACKENDS: Tuple[str, ...] = tuple(_BACKENDS)


def _kernels_installed() -> bool:
    """Whether the extension ``nequip._kernels`` loads. It is imported by name, so that a package's
    interned copy of this code uses the installed kernels too; where it is missing (a package
    loaded without nequip installed), the reference runs."""
    try:
        importlib.import_module("nequip._kernels")
    except ImportError:
        return False
    return True


# Loaded with the first model class, before any model runs: loading it also settles which of
# oneMKL's vector-math kernels torch's sin, sqrt, exp, ... use, on one thread (a first call on
# several threads at once can give one of them a low-accuracy kernel: cpp/src/vector_math.cpp).
_kernels_installed()


# The version of the kernels this code calls: their names end in _v{KERNEL_VERSION}, and their
# arguments are these. The installed library must register exactly these (a package made today
# keeps this copy of the code, so it checks whatever library is installed where it is loaded);
# otherwise the reference runs. cpp/kernels/message_passing.cpp says when the version changes;
# packages record it in their metadata (versions: nequip_kernels).
KERNEL_VERSION = 1
_KERNEL_ARGUMENTS = {
    "message_backward": "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, Tensor row_path)"
    " -> (Tensor, Tensor, Tensor)",
    "message_double_backward": "(Tensor a, Tensor x, Tensor g, Tensor w, Tensor center, Tensor neighbor, "
    "Tensor row_path, Tensor hw, Tensor ha, Tensor hx) -> (Tensor, Tensor, Tensor, Tensor)",
    "message_forward": "(Tensor a, Tensor x, Tensor w, Tensor center, Tensor neighbor, Tensor row_path) -> Tensor",
}


def _kernel(name: str):
    """The operator ``nequip::{name}_v{KERNEL_VERSION}``."""
    return getattr(torch.ops.nequip, f"{name}_v{KERNEL_VERSION}")


def cpu_kernels_missing() -> Optional[str]:
    """Why the ``cpu_kernels`` backend cannot run here, or None where it can: the installed
    ``nequip._kernels`` must register the operators this code calls, with its arguments."""
    if not _kernels_installed():
        return "the extension nequip._kernels is not installed"
    for name, arguments in _KERNEL_ARGUMENTS.items():
        expected = f"nequip::{name}_v{KERNEL_VERSION}{arguments}"
        registered = registered_schema(f"nequip::{name}_v{KERNEL_VERSION}")
        if registered is None:
            return f"the installed nequip._kernels has no nequip::{name}_v{KERNEL_VERSION}, which this code calls"
        if registered != expected:
            return f"the installed nequip._kernels registers {registered}, where this code calls {expected}"
    return None


def register_kernel_shapes() -> None:
    """Tell torch the output shapes of the forward and backward kernels (their "fake"
    implementations), so that graphs calling them can be traced with symbolic sizes and compiled
    (nequip.compile). Once per process, where the kernels are installed."""
    global _kernel_shapes_registered
    if _kernel_shapes_registered or cpu_kernels_missing() is not None:
        return

    def forward_shape(a, x, w, center, neighbor, row_path):
        return a.new_empty(x.shape[0], a.shape[2], x.shape[2])

    def backward_shapes(a, x, g, w, center, neighbor, row_path):
        edges = a.shape[0]
        return a.new_empty(w.shape), a.new_empty(a.shape), a.new_empty(edges, a.shape[1], x.shape[2])

    torch.library.register_fake(f"nequip::message_forward_v{KERNEL_VERSION}")(forward_shape)
    torch.library.register_fake(f"nequip::message_backward_v{KERNEL_VERSION}")(backward_shapes)
    _kernel_shapes_registered = True


_kernel_shapes_registered = False


def default_message_backend() -> str:
    """The backend a module gets when built: ``cpu_kernels`` where the kernels it calls are
    installed, else the reference."""
    return CPU_KERNELS if cpu_kernels_missing() is None else TORCH


def set_message_backend(model: torch.nn.Module, name: str) -> None:
    """Every message passing of ``model`` computes by backend ``name`` (one of
    :data:`MESSAGE_BACKENDS`) from now on.

    Modules are found by their ``use_message_backend`` method, so that a package's own copy of
    :class:`TensorProductSum` is set too; copies older than the backends have none (they choose
    by themselves while traced). Raises ValueError as :meth:`TensorProductSum.use_message_backend`.
    """
    for module in model.modules():
        if hasattr(module, "use_message_backend"):
            module.use_message_backend(name)


@contextlib.contextmanager
def message_backend(model: torch.nn.Module, name: str) -> Iterator[None]:
    """:func:`set_message_backend` inside the context; each module's own backend again after."""
    modules = [module for module in model.modules() if hasattr(module, "use_message_backend")]
    previous = [(module, module.message_backend) for module in modules]
    set_message_backend(model, name)
    try:
        yield
    finally:
        for module, backend in previous:
            module.message_backend = backend


@contextlib.contextmanager
def scripted_with_kernels(model: torch.nn.Module) -> Iterator[None]:
    """Every message passing of ``model`` scripted inside the context computes its node sums by
    the CPU kernels (:meth:`TensorProductSum.kernel_node_sums`), differentiated by their C++
    autograd functions; outside it, a scripted module differentiates :meth:`~TensorProductSum.
    message_sum` by autograd. Modules without the attribute (a package's older copy of the
    code) script as before: what a file calls is read from its code (nequip.compile)."""
    missing = cpu_kernels_missing()
    if missing is not None:
        raise ValueError(f"the message passing's kernels cannot be scripted in: {missing}")
    modules = [module for module in model.modules() if hasattr(module, "scripted_kernels")]
    for module in modules:
        module.scripted_kernels = KERNEL_VERSION
    try:
        yield
    finally:
        for module in modules:
            module.scripted_kernels = None


def _gradient_used(tensors: List[torch.Tensor]) -> bool:
    """Whether the backward pass running now wants the gradient of any of ``tensors``.

    ``ctx.needs_input_grad`` says only which inputs require grad. Training's force pass,
    ``autograd.grad(energy, positions, create_graph=True)``, runs the backward with radial
    weights that require grad but whose gradients it never uses (the loss's own backward takes
    them later): asked here, the engine says whether it will reach them. Where it cannot tell
    (another torch), they are computed."""
    for tensor in tensors:
        if not tensor.requires_grad:
            continue
        # a leaf's gradient goes to its accumulator, the node behind a view of it
        node = tensor.grad_fn if tensor.grad_fn is not None else tensor.view_as(tensor).grad_fn.next_functions[0][0]
        if torch_internals.engine_will_execute(node) is not False:
            return True
    return False


# _MessageSum.forward's named arguments after ctx, in order (the radial MLP's weights follow):
# backward reads ``needs_input_grad`` and returns its gradients by these names
_APPLY_ARGUMENTS = tuple(inspect.signature(_MessageSum.forward).parameters)[1:-1]
