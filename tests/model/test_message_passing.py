"""TensorProductSum is e3nn's "uvu" TensorProduct followed by the neighbor sum: the same values,
first and second derivatives, by every backend (the reference, torch operations, against e3nn;
the others against the reference), also when scripted."""

import pickle
import re
import subprocess
import sys

import pytest
import torch
from e3nn import o3

from e3nn.nn import FullyConnectedNet
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from nequip.nn import message_passing
from nequip.nn.message_passing import TensorProductSum
from nequip.nn.radial import RadialMLP

IRREPS_SH = o3.Irreps.spherical_harmonics(2, p=-1)
ALL_L2 = "4x0e+4x0o+4x1e+4x1o+4x2e+4x2o"

# the model's three kinds of layer (scalar input, hidden, scalars-only output) and an input
# of mixed multiplicities with paths that are left out
CASES = [
    ("4x0e", ALL_L2 + "+8x0e"),
    (ALL_L2, ALL_L2 + "+16x0e"),
    (ALL_L2, "4x0e"),
    ("3x0e+2x1o", "3x0e+2x1o+2x1e"),
]


def e3nn_tensor_product(irreps_in, irreps_out):
    """The e3nn module NequIP's interaction block is defined with (built in float64: e3nn keeps
    its coefficients in the default dtype of construction)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _e3nn_tensor_product(irreps_in, irreps_out)
    finally:
        torch.set_default_dtype(default)


def _e3nn_tensor_product(irreps_in, irreps_out):
    irreps_mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_edge) in enumerate(IRREPS_SH):
            for ir_out in ir_in * ir_edge:
                if ir_out in irreps_out:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(irreps_mid).sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return o3.TensorProduct(
        irreps_in, IRREPS_SH, irreps_mid, instructions, shared_weights=False, internal_weights=False
    ).to(torch.float64)


@pytest.fixture(params=["torch", "cpu_kernels", "inductor"])
def custom_backward(request):
    """A backend with a backward of its own (the reference's torch operations, the kernels, group
    by group for Inductor); ``autograd`` differentiates the forward."""
    return request.param


def random_inputs(module, num_nodes=7, num_edges=30, seed=0):
    """x, edge_sh, edge_radial (requiring grad), center, neighbor."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)

    return (
        randn(num_nodes, module.irreps_in.dim),
        randn(num_edges, IRREPS_SH.dim),
        randn(num_edges, module.radial_mlp.sizes[0]),
        torch.randint(0, num_nodes, (num_edges,), generator=generator),
        torch.randint(0, num_nodes, (num_edges,), generator=generator),
    )


def build(irreps_in, irreps_out, radial_sizes=(4, 6, 5), backend="torch"):
    torch.manual_seed(0)
    module = TensorProductSum(irreps_in, IRREPS_SH, irreps_out, list(radial_sizes)).to(torch.float64)
    module.use_message_backend(backend)
    return module


def test_radial_mlp_is_e3nn_fully_connected_net():
    mlp = RadialMLP([4, 6, 5, 3]).to(torch.float64)
    reference = FullyConnectedNet([4, 6, 5, 3], torch.nn.functional.silu).to(torch.float64)
    with torch.no_grad():
        for k, weight in enumerate(mlp.weights):
            getattr(reference, f"layer{k}").weight.copy_(weight)
    radial = torch.randn(10, 4, dtype=torch.float64)
    torch.testing.assert_close(mlp(radial), reference(radial), rtol=0, atol=1e-13)


def output_and_gradients(module, inputs, grad_out):
    """The node sums and their vector-Jacobian products with x, edge_sh, edge_radial and the radial weights."""
    out = module(*inputs)
    wrt = [*inputs[:3], *module.radial_mlp.weights]
    return (out, *torch.autograd.grad(out, wrt, grad_out))


@pytest.mark.parametrize("irreps_in, irreps_out", CASES)
def test_reference_is_e3nn(irreps_in, irreps_out):
    irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
    reference = e3nn_tensor_product(irreps_in, irreps_out)
    module = build(irreps_in, irreps_out)
    assert module.irreps_mid == reference.irreps_out
    assert module.weight_numel == reference.weight_numel

    x, edge_sh, edge_radial, center, neighbor = inputs = random_inputs(module)
    messages = reference(x[neighbor], edge_sh, module.radial_mlp(edge_radial))
    expected = torch.zeros(x.shape[0], reference.irreps_out.dim, dtype=torch.float64).index_add(0, center, messages)
    grad_out = torch.randn_like(expected)
    got, *got_grads = output_and_gradients(module, inputs, grad_out)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)

    # first derivatives: the custom backward against autograd through e3nn
    wrt = [x, edge_sh, edge_radial, *module.radial_mlp.weights]
    expected_grads = torch.autograd.grad(expected, wrt, grad_out)
    assert len(got_grads) == len(expected_grads)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-11)


def first_and_second_derivatives(module, inputs):
    """The node sums, a force-like first derivative (by x, edge_sh, edge_radial, keeping its graph)
    and that derivative's own derivative by every input and radial weight."""
    out = module(*inputs)
    grads = torch.autograd.grad(out.square().sum(), inputs[:3], create_graph=True)
    wrt = [*inputs[:3], *module.radial_mlp.weights]
    return (out, *grads, *torch.autograd.grad(sum(grad.sin().sum() for grad in grads), wrt))


def assert_same_numbers(got, expected):
    # float64 sums in another order: agreement to ~1e-13 of the values
    assert len(got) == len(expected)
    for got_value, expected_value in zip(got, expected):
        scale = expected_value.abs().max().item() if expected_value.numel() else 1.0
        torch.testing.assert_close(got_value, expected_value, rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize("backend", ["cpu_kernels", "inductor", "autograd"])
@pytest.mark.parametrize("irreps_in, irreps_out", CASES)
def test_every_backend_gives_the_reference_numbers(irreps_in, irreps_out, backend):
    # values, first and second derivatives (training differentiates forces), eagerly
    module = build(irreps_in, irreps_out)
    inputs = random_inputs(module)
    expected = first_and_second_derivatives(module, inputs)
    module.use_message_backend(backend)
    assert_same_numbers(first_and_second_derivatives(module, inputs), expected)


@pytest.mark.parametrize("irreps_in, irreps_out", CASES)
def test_traced_inductor_backend_gives_the_reference_numbers(irreps_in, irreps_out):
    # as compile/aotinductor.py records it: one make_fx graph, backward included
    module = build(irreps_in, irreps_out)
    inputs = random_inputs(module)
    grad_out = torch.randn(inputs[0].shape[0], module.irreps_mid.dim, dtype=torch.float64)
    expected = output_and_gradients(module, inputs, grad_out)
    module.use_message_backend("inductor")
    graph = make_fx(lambda *args: output_and_gradients(module, args[:-1], args[-1]))(*inputs, grad_out)
    # the per-edge contractions are broadcast products that inductor fuses
    assert not [node for node in graph.graph.nodes if node.target is torch.ops.aten.bmm.default]
    assert_same_numbers(graph(*inputs, grad_out), expected)


def test_eager_contractions_are_matrix_products_by_input_irrep():
    # the other half of the switch: outside tracing, bmm (its speed on CPU; traced, inductor
    # fuses), one per input irrep for all its path groups (larger matrices, twice the speed),
    # except over scalar inputs, an outer product per edge (a broadcast product)
    module = build(ALL_L2, ALL_L2)
    assert len(module.runs) < len(module.groups)
    inputs = random_inputs(module)
    with torch.profiler.profile() as profile:
        module(*inputs)
    bmm_calls = [event for event in profile.events() if event.name == "aten::bmm"]
    assert len(bmm_calls) == sum(run.d1 > 1 for run in module.runs) > 0


@pytest.mark.parametrize("irreps_out", ["1x0e+1x0o+1x1e+1x1o+1x2e+1x2o", "1x0e"])
def test_second_derivatives(irreps_out, custom_backward):
    # training differentiates forces, i.e. the custom backward itself (one channel: fast)
    module = build("1x0e+1x0o+1x1e+1x1o+1x2e+1x2o", irreps_out, radial_sizes=(2, 3), backend=custom_backward)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module, num_nodes=3, num_edges=5)
    assert torch.autograd.gradgradcheck(
        lambda *inputs: module(*inputs, center, neighbor), (x, edge_sh, edge_radial), fast_mode=True
    )


def test_second_derivatives_by_weights_match_autograd(custom_backward):
    # a force-like loss differentiated by the radial MLP's weights: custom backward vs autograd
    module = build(ALL_L2, ALL_L2, backend=custom_backward)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module)
    weights = list(module.radial_mlp.weights)

    def loss(out):
        grads = torch.autograd.grad(out.square().sum(), [edge_sh, edge_radial], create_graph=True)
        return sum(grad.square().sum() for grad in grads)

    scaled = module.radial_mlp.scaled_weights()
    expected = torch.autograd.grad(loss(module.message_sum(x, edge_sh, edge_radial, scaled, center, neighbor)), weights)
    got = torch.autograd.grad(loss(module(x, edge_sh, edge_radial, center, neighbor)), weights)
    for got_grad, expected_grad in zip(got, expected):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_scripted_is_the_same_function():
    module = build(ALL_L2, ALL_L2)
    inputs = random_inputs(module)
    scripted = torch.jit.script(module)
    got, expected = scripted(*inputs), module(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    wrt = list(inputs[:3])
    got_grads = torch.autograd.grad(got.square().sum(), wrt)
    expected_grads = torch.autograd.grad(expected.square().sum(), wrt)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-11)


def script_with_kernels(module):
    with message_passing.scripted_with_kernels(module):
        scripted = torch.jit.script(module)
    assert module.scripted_kernels is None  # the eager module is left as it was
    return scripted


def test_scripted_with_kernels_is_the_same_function():
    # a TorchScript file's message passing on a CPU: the kernels, differentiated by their C++
    # autograd functions, against the reference's torch operations
    module = build(ALL_L2, ALL_L2)
    scripted = script_with_kernels(module)
    assert "kernel_node_sums" in scripted.code and "message_forward_v1" in scripted.kernel_node_sums.code
    assert "kernel_node_sums" not in torch.jit.script(module).code
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module)
    got, expected = scripted(x, edge_sh, edge_radial, center, neighbor), module(x, edge_sh, edge_radial, center, neighbor)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    weights = list(module.radial_mlp.weights)
    wrt = [x, edge_sh, edge_radial, *weights]
    cotangent = torch.randn_like(got)
    got_grads = torch.autograd.grad((got * cotangent).sum(), wrt)
    expected_grads = torch.autograd.grad((expected * cotangent).sum(), wrt)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-11)

    # training's loss on forces: second derivatives by the inputs and the weights
    def loss(out):
        grads = torch.autograd.grad(out.square().sum(), [x, edge_sh, edge_radial], create_graph=True)
        return sum(grad.square().sum() for grad in grads)

    got_second = torch.autograd.grad(loss(scripted(x, edge_sh, edge_radial, center, neighbor)), wrt)
    expected_second = torch.autograd.grad(loss(module(x, edge_sh, edge_radial, center, neighbor)), wrt)
    for got_grad, expected_grad in zip(got_second, expected_second):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_kernel_derivatives_in_torchscript_pass_gradcheck():
    module = build("1x0e+1x0o+1x1e+1x1o+1x2e+1x2o", "1x0e+1x0o+1x1e+1x1o+1x2e+1x2o", radial_sizes=(2, 3))
    scripted = script_with_kernels(module)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module, num_nodes=3, num_edges=5)
    assert torch.autograd.gradgradcheck(
        lambda *inputs: scripted(*inputs, center, neighbor), (x, edge_sh, edge_radial), fast_mode=True
    )


def test_a_third_derivative_of_the_kernels_is_refused():
    module = build(ALL_L2, ALL_L2)
    scripted = script_with_kernels(module)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module)
    (first,) = torch.autograd.grad(scripted(x, edge_sh, edge_radial, center, neighbor).square().sum(), [x], create_graph=True)
    # once more without a graph is the second derivative; keeping its graph asks for a third
    torch.autograd.grad(first.square().sum(), [x], retain_graph=True)
    message = (
        "nequip::message_backward_v1 is differentiable once (forces and their training loss): a third "
        "derivative of the message passing's kernels is not provided; compile the file with --portable"
    )
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.autograd.grad(first.square().sum(), [x], create_graph=True)


def test_scripting_with_kernels_is_refused_where_they_cannot_run(monkeypatch):
    module = build(ALL_L2, ALL_L2)
    monkeypatch.setattr(message_passing, "cpu_kernels_missing", lambda: "the extension nequip._kernels is not installed")
    message = "the message passing's kernels cannot be scripted in: the extension nequip._kernels is not installed"
    with pytest.raises(ValueError, match=re.escape(message)):
        with message_passing.scripted_with_kernels(module):
            pass
    assert module.scripted_kernels is None


@pytest.mark.parametrize("backend", message_passing.MESSAGE_BACKENDS)
def test_no_edges(backend):
    module = build(ALL_L2, ALL_L2, backend=backend)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module, num_edges=0)
    out = module(x, edge_sh, edge_radial, center, neighbor)
    assert out.shape == (x.shape[0], module.irreps_mid.dim) and not out.any()
    grads = torch.autograd.grad(out.sum(), [x, *module.radial_mlp.weights])
    assert not any(grad.any() for grad in grads)


def weight_gradient_products(module, run_backward):
    """The matmuls of ``run_backward`` whose output has the shape of a radial weight matrix, or
    of a path group's columns of the last one: the weight gradients it computed."""
    shapes = {tuple(weight.shape) for weight in module.radial_mlp.weights}
    last = module.radial_mlp.weights[-1].shape[0]
    shapes |= {(last, group.num_paths * group.mul) for group in module.groups}
    shapes |= {(last, run.num_paths * module.inputs[run.input_irrep].mul) for run in module.runs}

    class Count(TorchDispatchMode):
        found = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default) and tuple(out.shape) in shapes:
                Count.found += 1
            return out

    with Count():
        run_backward()
    return Count.found


def test_a_force_pass_computes_no_weight_gradients(custom_backward):
    # training's force pass differentiates the energy by positions only, with weights that
    # require grad: their gradients would be thrown away
    module = build(ALL_L2, ALL_L2, backend=custom_backward)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module)
    out = module(x, edge_sh, edge_radial, center, neighbor).square().sum()
    force_like = weight_gradient_products(
        module, lambda: torch.autograd.grad(out, [x, edge_sh, edge_radial], create_graph=True, retain_graph=True)
    )
    assert force_like == 0
    # the control: a backward that wants them computes them, through the same code
    assert weight_gradient_products(module, lambda: torch.autograd.grad(out, list(module.radial_mlp.weights))) > 0


def test_eager_backward_on_cpu_runs_the_kernels():
    # the node sums by message_forward; a force-like backward (create_graph) by message_backward;
    # the loss's backward through it by message_double_backward, and through the node sums
    # themselves by message_backward again
    module = build(ALL_L2, ALL_L2, backend="cpu_kernels")
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module)
    with torch.profiler.profile() as forward_profile:
        out = module(x, edge_sh, edge_radial, center, neighbor)
    forward_names = [event.name for event in forward_profile.events()]
    assert forward_names.count("nequip::message_forward_v1") == len(module.runs)
    assert "aten::bmm" not in forward_names and "aten::scatter_add" not in forward_names
    with torch.profiler.profile() as profile:
        grads = torch.autograd.grad(out.square().sum(), [x, edge_sh, edge_radial], create_graph=True)
        sum(grad.square().sum() for grad in grads).backward()
    names = [event.name for event in profile.events()]
    assert names.count("nequip::message_backward_v1") == 2 * len(module.runs)
    assert names.count("nequip::message_double_backward_v1") == len(module.runs)


def test_the_kernels_refuse_indices_out_of_range():
    # a wrong index would read outside the node tensors: one clear error instead
    assert message_passing.cpu_kernels_missing() is None
    edges, nodes, d1, rows, paths, mul = 4, 3, 3, 2, 2, 5
    a, w = torch.randn(edges, d1, rows), torch.randn(edges, paths, mul)
    x, g = torch.randn(nodes, d1, mul), torch.randn(nodes, rows, mul)
    center, row_path = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match=re.escape("nequip::message_backward_v1: an edge index is outside [0, 3)")):
        torch.ops.nequip.message_backward_v1(a, x, g, w, center, torch.tensor([0, 1, 3, 0]), row_path)
    with pytest.raises(RuntimeError, match=re.escape("nequip::message_forward_v1: an edge index is outside [0, 3)")):
        torch.ops.nequip.message_forward_v1(a, x, w, torch.tensor([0, 1, 0, -1]), center, row_path)
    with pytest.raises(RuntimeError, match=re.escape("nequip::message_backward_v1: row_path is outside [0, 2)")):
        torch.ops.nequip.message_backward_v1(a, x, g, w, center, center, torch.tensor([0, 2]))
    shape_error = "nequip::message_backward_v1: g has shape [3, 1, 5], expected [3, 2, 5]"
    with pytest.raises(RuntimeError, match=re.escape(shape_error)):
        torch.ops.nequip.message_backward_v1(a, x, g[:, :1], w, center, center, row_path)
    cotangents = (torch.zeros(edges, paths, mul), torch.zeros(edges, d1, rows), torch.zeros(edges, d1, mul + 1))
    cotangent_error = "nequip::message_double_backward_v1: the cotangent of gx has shape [4, 3, 6], expected [4, 3, 5]"
    with pytest.raises(RuntimeError, match=re.escape(cotangent_error)):
        torch.ops.nequip.message_double_backward_v1(a, x, g, w, center, center, row_path, *cotangents)


def test_the_forward_kernel_sums_each_center_in_any_edge_order():
    # edges in random order, centers with none: the sums of the reference, to rounding
    module = build(ALL_L2, ALL_L2)
    x, edge_sh, edge_radial, center, neighbor = random_inputs(module, num_nodes=9, num_edges=60)
    center = torch.where(center == 3, torch.full_like(center, 4), center)  # node 3 is no center
    permutation = torch.randperm(center.shape[0], generator=torch.Generator().manual_seed(0))
    inputs = (x, edge_sh[permutation], edge_radial[permutation], center[permutation], neighbor[permutation])
    expected = module(*inputs)
    module.use_message_backend("cpu_kernels")
    got = module(*inputs)
    assert not got[3].any() and expected[4].abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mul", [16, 32, 64])
def test_kernels_at_their_compiled_widths_give_the_reference_numbers(mul):
    # 16, 32 and 64 channels run copies of the kernels compiled for that width (the cases above
    # have fewer)
    irreps = f"{mul}x0e+{mul}x1o+{mul}x2e"
    module = build(irreps, irreps)
    inputs = random_inputs(module, num_nodes=5, num_edges=40)
    expected = first_and_second_derivatives(module, inputs)
    module.use_message_backend("cpu_kernels")
    assert_same_numbers(first_and_second_derivatives(module, inputs), expected)


def test_a_module_is_built_with_the_kernels_where_they_are_installed():
    # this checkout builds nequip._kernels: a module that fell back here would train 1.7x slower
    assert message_passing.cpu_kernels_missing() is None
    assert message_passing.default_message_backend() == "cpu_kernels"
    assert TensorProductSum(ALL_L2, IRREPS_SH, ALL_L2, [4, 6]).message_backend == "cpu_kernels"


def test_importing_the_kernels_module_alone_registers_the_kernels():
    # training imports nequip._kernels and nothing of the runtime: the kernels live in the runtime
    # library, which that import must load (a linker that drops unused libraries would not)
    code = (
        "import torch, nequip._kernels\n"
        "from nequip.utils.torch_internals import registered_schema\n"
        "print(registered_schema('nequip::message_forward_v1') is not None, nequip._kernels.kernel_version)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", str(message_passing.KERNEL_VERSION)]


def test_an_unknown_backend_is_refused_by_name():
    module = build(ALL_L2, ALL_L2)
    message = "unknown message passing backend 'cuda': one of torch, cpu_kernels, inductor, autograd"
    with pytest.raises(ValueError, match=re.escape(message)):
        module.use_message_backend("cuda")
    assert module.message_backend == "torch"


def test_a_backend_set_on_a_model_and_restored_after_a_context():
    layers = torch.nn.ModuleList([build("4x0e", ALL_L2), build(ALL_L2, "4x0e", backend="cpu_kernels")])
    with message_passing.message_backend(layers, "inductor"):
        assert [layer.message_backend for layer in layers] == ["inductor", "inductor"]
    assert [layer.message_backend for layer in layers] == ["torch", "cpu_kernels"]
    message_passing.set_message_backend(layers, "autograd")
    assert [layer.message_backend for layer in layers] == ["autograd", "autograd"]


def test_a_backend_is_kept_through_pickling():
    module = build(ALL_L2, ALL_L2, backend="cpu_kernels")
    inputs = random_inputs(module)
    copy = pickle.loads(pickle.dumps(module))
    assert copy.message_backend == "cpu_kernels"
    assert_same_numbers(first_and_second_derivatives(copy, inputs), first_and_second_derivatives(module, inputs))


def test_kernels_of_another_version_leave_the_reference(monkeypatch):
    # as if this code (a package's copy of it, say) expected a version the installed library
    # does not register: built, it takes the reference; asked for the kernels, it says why not;
    # unpickled with them, it falls back with a warning and the reference's numbers
    module = build(ALL_L2, ALL_L2, backend="cpu_kernels")
    inputs = random_inputs(module)
    expected = first_and_second_derivatives(module, inputs)
    saved = pickle.dumps(module)
    monkeypatch.setattr(message_passing, "KERNEL_VERSION", 2)
    missing = "the installed nequip._kernels has no nequip::message_backward_v2, which this code calls"
    assert message_passing.cpu_kernels_missing() == missing
    assert message_passing.default_message_backend() == "torch"
    refused = f"the message passing backend 'cpu_kernels' cannot run here: {missing}; use 'torch'"
    with pytest.raises(ValueError, match=re.escape(refused)):
        module.use_message_backend("cpu_kernels")
    fallback = f"the message passing runs as torch operations (slower): {missing}"
    with pytest.warns(UserWarning, match=re.escape(fallback)):
        loaded = pickle.loads(saved)
    assert loaded.message_backend == "torch"
    assert_same_numbers(first_and_second_derivatives(loaded, inputs), expected)


def test_kernels_whose_arguments_changed_are_not_called(monkeypatch):
    # the same name registered with other arguments: the schema is compared, not the name alone
    arguments = dict(message_passing._KERNEL_ARGUMENTS)
    changed = arguments["message_double_backward"].replace("Tensor hx)", "Tensor hx, int mul)")
    arguments["message_double_backward"] = changed
    monkeypatch.setattr(message_passing, "_KERNEL_ARGUMENTS", arguments)
    registered = message_passing.registered_schema("nequip::message_double_backward_v1")
    assert message_passing.cpu_kernels_missing() == (
        f"the installed nequip._kernels registers {registered}, where this code calls "
        f"nequip::message_double_backward_v1{arguments['message_double_backward']}"
    )


def test_version_1_keeps_the_names_packages_called_before_versioning():
    # packages made before the names carried a version call these, without checking (the
    # forward kernel came after)
    for name in ["message_backward", "message_double_backward"]:
        arguments = message_passing._KERNEL_ARGUMENTS[name]
        assert message_passing.registered_schema(f"nequip::{name}") == f"nequip::{name}{arguments}"
        assert message_passing.registered_schema(f"nequip::{name}_v1") == f"nequip::{name}_v1{arguments}"
