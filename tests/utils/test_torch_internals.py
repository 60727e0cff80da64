"""What nequip relies on in torch's private APIs (nequip.utils.torch_internals), one test per use,
so that a torch upgrade shows here what changed. The compile-time patches of Inductor are tested in
tests/compile/test_inductor_speedups.py, and every use together by the compile tests."""

import inspect
import re

import pytest
import torch

from nequip.compile.aotinductor import INDUCTOR_CONFIGS
from nequip.utils import torch_internals
from nequip.utils.torch_internals import TorchInternalsError


def test_this_torch_is_one_the_internals_were_checked_with():
    assert torch_internals.torch_checked(), torch.__version__


def test_trace_symbolic_records_the_backward_with_a_size_per_dimension():
    def forces_like(x, y):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((x.sin() * y.sum()).sum(), x)
        return grad

    x, y = torch.randn(3), torch.randn(3)
    graph = torch_internals.trace_symbolic(forces_like, (x, y))
    # the engine's backward is recorded (cos, the derivative of sin) as plain operations
    assert torch.ops.aten.cos.default in {node.target for node in graph.graph.nodes}
    # x and y have the same example size, but keep a symbol each (no duck shapes)
    sizes = [node.meta["val"].shape[0] for node in graph.graph.find_nodes(op="placeholder")]
    assert all(isinstance(size, torch.SymInt) for size in sizes)
    assert len({str(size) for size in sizes}) == 2
    torch.testing.assert_close(graph(torch.ones(5), torch.ones(2)), forces_like(torch.ones(5), torch.ones(2)))


def test_trace_symbolic_refuses_a_data_dependent_branch():
    def branches(x):
        return x * 2 if x.sum() > 0 else x

    with pytest.raises(Exception, match="data-dependent|data dependent"):
        torch_internals.trace_symbolic(branches, (torch.randn(3),))


def test_statically_known_true_on_symbolic_sizes():
    answers = []

    def record(x, y):
        answers.append(torch_internals.statically_known_true(x.shape[0] == x.shape[0]))
        answers.append(torch_internals.statically_known_true(x.shape[0] == y.shape[0]))
        return x

    torch_internals.trace_symbolic(record, (torch.randn(3), torch.randn(3)))
    assert answers == [True, False]


def test_min_cut_partition_splits_a_joint_graph_into_its_forward_and_backward():
    def joint(x, w, tangent):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = (x @ w).sin()
            (grad,) = torch.autograd.grad(out, x, tangent)
        return out.detach(), grad

    x, w = torch.randn(4, 3), torch.randn(3, 5)
    tangent = torch.randn(4, 5)
    # as compile/aotinductor.py's layer_joint_graph: traced, then without in-place operations
    traced = torch_internals.trace_symbolic(joint, (x, w, tangent))
    traced = torch_internals.trace_symbolic(torch.func.functionalize(traced, remove="mutations"), (x, w, tangent))
    forward, backward = torch_internals.min_cut_partition(traced)

    outputs = forward(x, w)
    torch.testing.assert_close(outputs[0], joint(x, w, tangent)[0])
    # the backward's inputs are named after the forward's outputs and the renamed inputs
    (output_node,) = forward.graph.find_nodes(op="output")
    by_name = {node.name: value for node, value in zip(output_node.args[0], outputs)}
    by_name.update(primals_1=x, primals_2=w, tangents_1=tangent)
    names = [node.name for node in backward.graph.find_nodes(op="placeholder")]
    assert names[-1] == "tangents_1"
    (grad,) = [g for g in backward(*[by_name[name] for name in names]) if g is not None]
    torch.testing.assert_close(grad, joint(x, w, tangent)[1])


def test_force_stride_order_gives_the_tensor_with_those_strides():
    x = torch.randn(3, 4).t()
    forced = torch_internals.force_stride_order()(x, [3, 1])
    assert forced.stride() == (3, 1)
    torch.testing.assert_close(forced, x)


def test_aotinductor_entry_points_take_the_arguments_given():
    # compiling takes a minute: the compile tests run these; here, that they take what is passed
    parameters = inspect.signature(torch._inductor.aoti_compile_and_package).parameters
    assert {"package_path", "inductor_configs"} <= set(parameters)
    assert "options" in inspect.signature(torch._inductor.aot_compile).parameters
    from torch._inductor.package import package_aoti

    assert list(inspect.signature(package_aoti).parameters)[:2] == ["archive_file", "aoti_files"]


def test_inductor_options_exist():
    from torch._inductor import config

    options = config.get_config_copy()
    for name in [*INDUCTOR_CONFIGS, "aot_inductor.metadata", "aot_inductor.package"]:
        assert name in options, name


def test_inductor_cache_dir_is_a_path():
    assert torch_internals.inductor_cache_dir().startswith("/")



def test_cpp_compiler_output_is_what_inductors_compile_error_carries():
    from torch._inductor.exc import CppCompileError

    output = "cc1plus: fatal error: error writing to /tmp/ccA.s: No space left on device\n"
    assert torch_internals.cpp_compiler_output(CppCompileError(["g++", "a.cpp"], output)) == output
    assert torch_internals.cpp_compiler_output(RuntimeError(output)) is None

class _AskTheEngine(torch.autograd.Function):
    """Identity whose backward asks whether the engine will execute ``_AskTheEngine.node``."""

    node, answers = None, []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _AskTheEngine.answers.append(torch_internals.engine_will_execute(_AskTheEngine.node))
        return grad


def test_engine_will_execute_says_which_gradients_a_backward_pass_computes():
    # as the message passing asks about the radial MLP's scaled weights (not leaves)
    x, w = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    scaled = w * 2.0
    _AskTheEngine.node, _AskTheEngine.answers = scaled.grad_fn, []
    out = (_AskTheEngine.apply(x) * scaled).sum()
    torch.autograd.grad(out, [x], retain_graph=True)  # w's gradient is not asked for
    torch.autograd.grad(out, [x, w], retain_graph=True)
    # a leaf's accumulator, inside autograd.grad: the engine cannot tell
    _AskTheEngine.node = w.view_as(w).grad_fn.next_functions[0][0]
    torch.autograd.grad(out, [x, w])
    assert _AskTheEngine.answers == [False, True, None]
    # nor outside a backward pass
    assert torch_internals.engine_will_execute(scaled.grad_fn) is None


def test_registered_schema():
    assert torch_internals.registered_schema("aten::relu") == "aten::relu(Tensor self) -> Tensor"
    assert torch_internals.registered_schema("aten::no_such_operator") is None


def test_another_torch_is_refused_where_compiling_needs_the_internals(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.14.0+cpu")
    assert not torch_internals.torch_checked()
    message = (
        "nequip uses torch's make_fx (private arguments) and torch.fx.experimental._config, checked with "
        "torch 2.11 to 2.13; this is torch 2.14.0+cpu: install a torch in that range (pip install 'torch>=2.11,<2.14')"
    )
    with pytest.raises(TorchInternalsError, match=re.escape(message)):
        torch_internals.trace_symbolic(lambda x: x, (torch.ones(2),))
    with pytest.raises(TorchInternalsError, match=re.escape("torch 2.14.0+cpu")):
        torch_internals.force_stride_order()
    # the compile-time patches are left out: Inductor as it is
    from torch._inductor.cpp_builder import CppBuilder

    build = CppBuilder.build
    with torch_internals.inductor_wrapper_built_beside_kernels(), torch_internals.inductor_index_analysis_by_expand():
        assert CppBuilder.build is build
        from torch._inductor import sizevars
        import sympy

        assert sizevars.sympy is sympy
    # the model's queries still answer
    assert torch_internals.registered_schema("aten::relu") == "aten::relu(Tensor self) -> Tensor"
