"""A layer's forward part and its VJP, split from one joint graph (the parts of a
`pair_nequip_domain` package): the same values as autograd, and per edge only the radial MLP's
hidden values kept between them."""

import pytest
import torch

from fixtures.compiled import DEEP_MODEL_CONFIG
from nequip.compile.aotinductor import LayerJoint, _part_inputs, layer_joint_graph, split_joint
from nequip.model import NequIPModel


@pytest.fixture(scope="module")
def deep_eager():
    torch.manual_seed(7)
    return NequIPModel(**DEEP_MODEL_CONFIG).eval()


def residual_bytes(forward, inputs):
    with torch.no_grad():
        _, *residuals = forward(*inputs)
    return sum(r.numel() * r.element_size() for r in residuals)


@pytest.mark.parametrize("index", range(DEEP_MODEL_CONFIG["num_layers"]))
def test_split_layer_gives_autograd_values_and_keeps_little_per_edge(deep_eager, index):
    name = f"layer_{index}_vjp"
    traced_inputs = _part_inputs(deep_eager, 2, torch.device("cpu"))[name]
    forward, backward = split_joint(layer_joint_graph(deep_eager, index, traced_inputs))

    sizes, num_residuals = {}, set()
    for num_atoms, num_edges in ((16, 100), (16, 230)):  # neither the traced sizes
        inputs = _part_inputs(deep_eager, 2, torch.device("cpu"), num_atoms, num_edges)[name]
        primals, tangent = inputs[:-1], torch.randn_like(inputs[-1])
        with torch.no_grad():
            out, *residuals = forward(*primals)
            grads = backward(*primals, out, *residuals, tangent)
        assert residuals  # at least the radial MLP's hidden values
        num_residuals.add(len(residuals))
        expected = LayerJoint(deep_eager, index)(*primals, tangent)
        assert len(grads) == len(expected) - 1 == (3 if index > 0 else 2)
        for got, want in zip((out,) + tuple(grads), expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        sizes[num_edges] = (inputs[2].shape[1], residual_bytes(forward, primals))

    assert len(num_residuals) == 1  # the same values kept whatever the sizes
    # Per edge: the radial MLP's hidden activations (costly matmuls) only; every other per-edge
    # value (gathered features, messages) is recomputed, and the harmonics and the edge index,
    # inputs of both graphs, are not returned again.
    (edges_a, (_, bytes_a)), (edges_b, (_, bytes_b)) = sorted(sizes.items())
    per_edge = (bytes_b - bytes_a) / (edges_b - edges_a)
    itemsize = torch.finfo(torch.float64).bits // 8
    hidden = DEEP_MODEL_CONFIG["radial_mlp_depth"] * DEEP_MODEL_CONFIG["radial_mlp_width"]
    assert per_edge <= hidden * itemsize, per_edge
