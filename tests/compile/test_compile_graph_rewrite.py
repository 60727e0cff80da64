"""The graph rewrite that keeps inductor's CPU code generation away from single-row scatters."""

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from nequip.compile.aotinductor import sum_scatters_into_one_row


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
