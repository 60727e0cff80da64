"""The graph rewrites before export: single-row scatters as sums (inductor's CPU code generation
cannot vectorise them), and gathered node tensors made buffers of their own."""

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from nequip.compile.aotinductor import materialize_gathered, sum_scatters_into_one_row


def frame_sums(per_atom, per_edge, edge_center, atom_features):
    num_atoms = per_atom.shape[0]
    frame = torch.zeros(num_atoms, dtype=torch.long)
    total = torch.zeros((1, 1), dtype=per_atom.dtype).index_add(0, frame, per_atom, alpha=2.0)
    cell_grad = torch.zeros((1, 3, 3), dtype=per_edge.dtype).index_put([frame[edge_center]], per_edge, accumulate=True)
    # a real scatter (one row per atom): must stay as it is
    per_atom_sum = torch.zeros_like(atom_features).index_add(0, edge_center, per_edge.flatten(1)[:, :4])
    return total, cell_grad, per_atom_sum


def test_single_row_scatters_become_sums_with_the_same_values():
    generator = torch.Generator().manual_seed(0)
    num_atoms, num_edges = 5, 7
    inputs = (
        torch.randn((num_atoms, 1), generator=generator, dtype=torch.float64),
        torch.randn((num_edges, 3, 3), generator=generator, dtype=torch.float64),
        torch.randint(num_atoms, (num_edges,), generator=generator),
        torch.randn((num_atoms, 4), generator=generator, dtype=torch.float64),
    )
    traced = make_fx(frame_sums, tracing_mode="symbolic")(*inputs)

    assert sum_scatters_into_one_row(traced) == 2
    targets = [node.target for node in traced.graph.nodes]
    assert torch.ops.aten.index_put.default not in targets
    assert targets.count(torch.ops.aten.index_add.default) == 1  # the per-atom one

    for got, expected in zip(traced(*inputs), frame_sums(*inputs)):
        torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    # no edges at all: the sums are empty, the result is the destination
    no_edges = (inputs[0], inputs[1][:0], inputs[2][:0], inputs[3])
    for got, expected in zip(traced(*no_edges), frame_sums(*no_edges)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


MIX = torch.linspace(-1.0, 1.0, 144, dtype=torch.float64).view(12, 12)


def gathers(x, grad_a, grad_b, edge_index):
    """The message passing's three kinds of gather: channels-last node features (a transposed
    copy), a stack of transposed gradient blocks, and a tensor that is already a buffer."""
    # as in the model, the feature widths are fixed by weights, the numbers of rows are not
    x, grad_a, grad_b = x @ MIX, grad_a @ MIX, grad_b @ MIX
    x_channels_last = x.view(-1, 4, 3).transpose(1, 2).contiguous()  # (N, 3, 4)
    grad_sums = torch.stack([grad_a.view(-1, 4, 3).transpose(1, 2), grad_b.view(-1, 4, 3).transpose(1, 2)], dim=1)
    return (
        x_channels_last.index_select(0, edge_index[1]),
        grad_sums.index_select(0, edge_index[0]),
        x_channels_last.index_select(0, edge_index[0]),  # the same source again: one buffer
        x.index_select(0, edge_index[0]),  # already a buffer (a matmul's): left alone
    )


def test_gathered_node_tensors_become_contiguous_buffers_with_the_same_values():
    generator = torch.Generator().manual_seed(1)
    num_atoms, num_edges = 6, 11
    inputs = (
        torch.randn((num_atoms, 12), generator=generator, dtype=torch.float64),
        torch.randn((num_atoms, 12), generator=generator, dtype=torch.float64),
        torch.randn((num_atoms, 12), generator=generator, dtype=torch.float64),
        torch.randint(num_atoms, (2, num_edges), generator=generator),
    )
    traced = make_fx(gathers, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)

    assert materialize_gathered(traced) == 2
    force_stride_order = torch.ops.prims.inductor_force_stride_order.default
    sources = [node.args[0] for node in traced.graph.find_nodes(op="call_function", target=torch.ops.aten.index_select.default)]
    assert [source.target for source in sources] == [force_stride_order] * 3 + [torch.ops.aten.mm.default]
    # row-major, channels innermost: (N, 3, 4) and (N, 2, 3, 4)
    assert [source.args[1] for source in sources[:3]] == [[12, 4, 1], [24, 12, 4, 1], [12, 4, 1]]
    assert materialize_gathered(traced) == 0  # nothing left to do

    for got, expected in zip(traced(*inputs), gathers(*inputs)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # other sizes than the traced ones
    fewer = (inputs[0][:2], inputs[1][:2], inputs[2][:2], inputs[3][:, :3] % 2)
    for got, expected in zip(traced(*fewer), gathers(*fewer)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
