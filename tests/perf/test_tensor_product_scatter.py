"""TensorProductScatter is the same function as e3nn's "uvu" TensorProduct followed by the
neighbour sum, and the lean interaction block is the same model (tiny sizes: fast)."""

import copy

import pytest
import torch
from e3nn import o3
from torch.fx.experimental.proxy_tensor import make_fx

from nequip.model import build_model
from nequip.nn import InteractionBlock
from nequip.nn.lean_interaction import LeanInteractionBlock, use_lean_message_passing
from nequip.nn.tensor_product_scatter import TensorProductScatter

# l_max 2 with parity over three layers reaches every kind of path: l1 = 0 inputs, l3 = 0
# outputs, odd and even irreps, several paths into one output irrep dimension
CONFIG = dict(
    type_names=["Si", "C"], r_max=3.0, l_max=2, parity=True, num_layers=3, num_features=4,
    num_bessels=4, radial_mlp_depth=1, radial_mlp_width=8, avg_num_neighbors=3.0, model_dtype="float64",
)


@pytest.fixture(scope="module")
def model():
    # built in float64 throughout, so that e3nn's own coefficients are exact and equivariance
    # can be checked to 1e-10
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return build_model(CONFIG, seed=0).eval()
    finally:
        torch.set_default_dtype(default)


def tensor_products(model):
    return [m.tensor_product for m in model.modules() if isinstance(m, InteractionBlock)]


def random_inputs(tp, num_nodes, num_edges, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    edge_sh = torch.randn(num_edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64)
    weights = torch.randn(num_edges, tp.weight_numel, generator=generator, dtype=torch.float64)
    center = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    neighbor = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    return x, edge_sh, weights, center, neighbor


def e3nn_reference(tp, x, edge_sh, weights, center, neighbor):
    messages = tp(x[neighbor], edge_sh, weights)
    return torch.zeros((x.shape[0], tp.irreps_out.dim), dtype=x.dtype).index_add(0, center, messages)


@pytest.mark.parametrize("num_edges", [0, 1, 13])
def test_equals_e3nn_tensor_product_and_neighbour_sum(model, num_edges):
    for tp in tensor_products(model):
        inputs = random_inputs(tp, 5, num_edges)
        expected = e3nn_reference(tp, *inputs)
        got = TensorProductScatter(tp)(*inputs)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-12, rtol=0), (got - expected).abs().max()


def test_gradients_equal_e3nn(model):
    tp = tensor_products(model)[1]
    inputs = random_inputs(tp, 4, 11)
    cotangent = torch.randn(4, tp.irreps_out.dim, dtype=torch.float64)
    grads = []
    for function in (lambda *a: e3nn_reference(tp, *a), TensorProductScatter(tp)):
        leaves = [t.clone().requires_grad_(True) for t in inputs[:3]]
        out = function(*leaves, *inputs[3:])
        grads.append(torch.autograd.grad(out, leaves, cotangent))
    for expected, got in zip(*grads):
        assert torch.allclose(got, expected, atol=1e-12, rtol=0)


@pytest.fixture
def float64_default():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds Wigner D matrices in the default dtype
    yield
    torch.set_default_dtype(default)


def test_output_rotates_with_its_inputs(model, float64_default):
    tp = tensor_products(model)[1]
    x, _, weights, center, neighbor = random_inputs(tp, 4, 9)
    vectors = torch.randn(9, 3, dtype=torch.float64)
    sh = o3.spherical_harmonics(tp.irreps_in2, vectors, normalize=True, normalization="component")
    rotation = o3.rand_matrix(dtype=torch.float64)
    lean = TensorProductScatter(tp)
    sh_rotated = o3.spherical_harmonics(tp.irreps_in2, vectors @ rotation.T, normalize=True, normalization="component")
    rotated_then = lean(x @ tp.irreps_in1.D_from_matrix(rotation).T, sh_rotated, weights, center, neighbor)
    then_rotated = lean(x, sh, weights, center, neighbor) @ tp.irreps_out.D_from_matrix(rotation).T
    assert torch.allclose(rotated_then, then_rotated, atol=1e-10)


def test_is_torchscript_scriptable(model):
    tp = tensor_products(model)[1]
    inputs = random_inputs(tp, 5, 7)
    scripted = torch.jit.script(TensorProductScatter(tp))
    assert torch.allclose(scripted(*inputs), e3nn_reference(tp, *inputs), atol=1e-12, rtol=0)


def test_make_fx_traces_it_with_its_derivatives(model):
    tp = tensor_products(model)[1]
    lean = TensorProductScatter(tp)

    def value_and_grads(x, edge_sh, weights, center, neighbor):
        x, edge_sh, weights = (t.detach().requires_grad_(True) for t in (x, edge_sh, weights))
        out = lean(x, edge_sh, weights, center, neighbor)
        return (out, *torch.autograd.grad(out.square().sum(), [x, edge_sh, weights]))

    traced = make_fx(value_and_grads, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*random_inputs(tp, 5, 7))
    for num_edges in (0, 11):  # other sizes than traced, E = 0 included
        inputs = random_inputs(tp, 6, num_edges, seed=1)
        for got, expected in zip(traced(*inputs), value_and_grads(*inputs)):
            assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def frame(num_atoms=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pos = 3.0 * torch.rand(num_atoms, 3, generator=generator, dtype=torch.float64)
    index = torch.tensor([(i, j) for i in range(num_atoms) for j in range(num_atoms) if i != j]).T
    return {
        "pos": pos,
        "atom_types": torch.arange(num_atoms) % 2,
        "edge_index": index,
        "cell": (5.0 * torch.eye(3, dtype=torch.float64)).unsqueeze(0),
        "edge_cell_shift": torch.zeros(index.shape[1], 3, dtype=torch.float64),
    }


def test_lean_model_gives_the_same_energy_forces_and_stress(model):
    lean = use_lean_message_passing(copy.deepcopy(model))
    assert any(isinstance(m, LeanInteractionBlock) for m in lean.modules())
    data = frame()
    expected, got = model(data), lean(data)
    for key in ("atomic_energy", "total_energy", "forces", "stress"):
        assert torch.allclose(got[key], expected[key], atol=1e-12, rtol=0), key


def test_lean_model_keeps_the_state_dict(model):
    lean = use_lean_message_passing(copy.deepcopy(model))
    assert list(lean.state_dict()) == list(model.state_dict())
    fresh = use_lean_message_passing(build_model(CONFIG, seed=1))
    fresh.load_state_dict(model.state_dict())
    data = frame(seed=2)
    assert torch.allclose(fresh(data)["total_energy"], model(data)["total_energy"], atol=1e-12, rtol=0)


def test_lean_model_scripts(model):
    from nequip.compile.torchscript import script_model  # the project's TorchScript path

    lean = script_model(use_lean_message_passing(copy.deepcopy(model)))
    data = frame()
    assert torch.allclose(lean(data)["forces"], model(data)["forces"], atol=1e-12, rtol=0)
