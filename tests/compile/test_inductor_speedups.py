"""The compile-time changes to Inductor (nequip.compile.inductor_speedups, made in
nequip.utils.torch_internals): the same answers, got another way, and Inductor as it was once the
compile is over. Every AOTInductor file the suite
compiles goes through them; the agreement tests check those files against the eager model."""

import threading

import pytest
import sympy
from torch._inductor import sizevars
from torch._inductor.cpp_builder import CppBuilder
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from nequip.compile.inductor_speedups import faster_compile
from nequip.utils.torch_internals import inductor_wrapper_built_beside_kernels


def index_expressions():
    """Index expressions of the kinds Inductor's C++ backend analyses: loop variables x0, x1
    and dynamic sizes s0, s1 (atoms, edges), through views that divide and take remainders."""
    x0, x1, s0, s1 = sympy.symbols("x0 x1 s0 s1", integer=True, nonnegative=True)
    return x1, [
        x1 + 32 * x0,
        160 * x0 + 5 * x1,
        x1 + 32 * FloorDiv(x1, 32) + 96 * x0,
        ModularIndexing(x1, 1, 32) + 32 * FloorDiv(x1, 160) + 480 * x0,
        ModularIndexing(x1, 1, 5) + 5 * ModularIndexing(x1, 5, 3) + 15 * s0 * x0,
        s1 * x1 + 3 * (x0 + 2) * (s0 + 1),
        FloorDiv(x1, 3) + ModularIndexing(x1, 1, 3) * s0,
    ]


def exact_strides(var, expressions):
    sizevars.stride_at_vec_range.cache_clear()
    return [sizevars.stride_at_vec_range(index, var, 16) for index in expressions]


def test_index_analysis_gives_the_same_strides_without_simplify(monkeypatch):
    var, expressions = index_expressions()
    exact = exact_strides(var, expressions)

    def refuse(*args, **kwargs):
        raise AssertionError("sympy.simplify called inside faster_compile")

    with monkeypatch.context() as patch:
        patch.setattr(sympy, "simplify", refuse)
        with faster_compile():
            assert sizevars.sympy is not sympy
            fast = [sizevars.stride_at_vec_range(index, var, 16) for index in expressions]
        # outside, the analysis is Inductor's own again: it calls simplify
        assert sizevars.sympy is sympy
        with pytest.raises(AssertionError, match="sympy.simplify called"):
            exact_strides(var, expressions)
    for expression, a, b in zip(expressions, exact, fast):
        assert sympy.expand(a - b) == 0, (expression, a, b)
    # the answers given inside were not kept for later compiles
    assert sizevars.stride_at_vec_range.cache_info().currsize == 0


class FakeBuilder(CppBuilder):
    """A builder of one file, whose build (CppBuilder.build, patched by each test) records it."""

    def __init__(self, target):
        self.target = target

    def get_target_file_path(self):
        return self.target


def test_the_wrapper_builds_beside_the_kernels_and_the_link_waits_for_it(monkeypatch):
    kernel_started, wrapper_done = threading.Event(), threading.Event()
    events = []

    def build(builder):
        events.append(f"start {builder.target}")
        if builder.target.endswith("wrapper.o"):
            # built one after the other, the kernels would not start before this returns
            assert kernel_started.wait(timeout=30), "the kernels' build did not start while the wrapper built"
            wrapper_done.set()
        elif builder.target.endswith("kernel.o"):
            kernel_started.set()
        else:
            assert wrapper_done.is_set(), "linked before the wrapper's object was built"
        events.append(f"end {builder.target}")

    monkeypatch.setattr(CppBuilder, "build", build)
    with inductor_wrapper_built_beside_kernels():
        for target in ("m.wrapper.o", "m.kernel.o", "m.wrapper.so"):
            FakeBuilder(target).build()
        # every object is built when the kernels' build returns
        assert events.index("end m.wrapper.o") < events.index("start m.wrapper.so")
    assert CppBuilder.build is build


def test_a_failed_wrapper_build_fails_the_compile(monkeypatch):
    def build(builder):
        if builder.target.endswith("wrapper.o"):
            raise RuntimeError("g++ failed on the wrapper")

    monkeypatch.setattr(CppBuilder, "build", build)
    with pytest.raises(RuntimeError, match="g\\+\\+ failed on the wrapper"):
        with inductor_wrapper_built_beside_kernels():
            FakeBuilder("m.wrapper.o").build()
            FakeBuilder("m.kernel.o").build()
    assert CppBuilder.build is build
    # a wrapper whose build was never waited for inside the context is waited for on the way out
    with pytest.raises(RuntimeError, match="g\\+\\+ failed on the wrapper"):
        with inductor_wrapper_built_beside_kernels():
            FakeBuilder("m.wrapper.o").build()
    assert CppBuilder.build is build
