"""Every private torch API that nequip's Python code uses, in one place: a torch upgrade is this
file's work, and that of its tests (tests/utils/test_torch_internals.py, one per use).

Checked with torch 2.11 (CUDA) and 2.13 (CPU), the range ``CHECKED_TORCH`` (pyproject.toml
pins the same). Outside it nothing here is trusted:

* what compiling needs (tracing, the partitioner, Inductor's entry points) raises
  :class:`TorchInternalsError`, naming the use and the versions;
* the compile-time patches of Inductor (nequip.compile.inductor_speedups) are left out: the same
  files, compiled more slowly;
* the queries the model's code makes (that code is interned in packages, so it runs under
  whatever torch loads the package) keep their presence checks and fall back to the answer that is
  always safe, whatever the version.

Uses: compile/aotinductor.py (tracing with derivatives, symbolic-size facts, the min-cut
partitioner, Inductor's stride constraint, AOTInductor's compile and package functions, whose
option names ``INDUCTOR_CONFIGS`` holds), compile/inductor_speedups.py (Inductor's index analysis
and C++ builder), compile/compiler.py (Inductor's cache directory, its C++ compile error), nn/message_passing.py (the
autograd engine's plan, operator schemas). In C++, cpp/src/call_memory.cpp replaces c10's CPU
allocator; it is not covered here.
"""

import concurrent.futures
import contextlib
import types
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

CHECKED_TORCH = ((2, 11), (2, 14))  # [from, before): 2.11 with CUDA and 2.13 on CPU were checked


class TorchInternalsError(RuntimeError):
    """A private torch API that nequip needs is missing, or this torch was never checked with it."""


def _torch_version() -> Tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def torch_checked() -> bool:
    """Whether this torch's version is one nequip's use of its internals was checked with."""
    return CHECKED_TORCH[0] <= _torch_version() < CHECKED_TORCH[1]


def _require(use: str) -> None:
    """Raise where ``use`` (a private API that compiling needs) cannot be trusted: outside CHECKED_TORCH."""
    if not torch_checked():
        (a, b), (c, d) = CHECKED_TORCH
        raise TorchInternalsError(
            f"nequip uses torch's {use}, checked with torch {a}.{b} to {c}.{d - 1}; this is torch "
            f"{torch.__version__}: install a torch in that range (pip install 'torch>={a}.{b},<{c}.{d}')"
        )


# -- tracing --------------------------------------------------------------------------------


def trace_symbolic(function: Callable, inputs) -> "torch.fx.GraphModule":
    """``function(*inputs)`` traced to aten operations with symbolic sizes, including what the
    autograd engine runs inside it (``make_fx``, which ``torch.export`` cannot replace there).

    Inputs may be real tensors (``_allow_non_fake_inputs``); a data-dependent operation is an
    error rather than a guard (``_error_on_data_dependent_ops``); two dimensions are never merged
    because their example sizes happen to agree (``use_duck_shape=False``)."""
    _require("make_fx (private arguments) and torch.fx.experimental._config")
    import torch.fx.experimental._config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    with fx_config.patch(use_duck_shape=False):
        trace = make_fx(
            function, tracing_mode="symbolic", _allow_non_fake_inputs=True, _error_on_data_dependent_ops=True
        )
        return trace(*inputs)


def statically_known_true(condition) -> bool:
    """Whether a condition on symbolic sizes holds for every size (False where unknown)."""
    _require("torch.fx.experimental.symbolic_shapes.statically_known_true")
    from torch.fx.experimental.symbolic_shapes import statically_known_true as known

    return known(condition)


def min_cut_partition(joint: "torch.fx.GraphModule") -> Tuple["torch.fx.GraphModule", "torch.fx.GraphModule"]:
    """AOTAutograd's min-cut split of a joint graph whose last input is the tangent of its first
    output, recomputing aggressively (the gathers onto edges too). Returns its forward and
    backward graphs; renames the joint's inputs ``primals_1, ...`` and ``tangents_1`` (by which
    the partitioner tells them apart), the names the backward graph's inputs then carry."""
    _require("AOTAutograd's min-cut partitioner (torch._functorch)")
    import torch._functorch.config as functorch_config
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    placeholders = list(joint.graph.find_nodes(op="placeholder"))
    for index, node in enumerate(placeholders[:-1]):
        node.name = node.target = f"primals_{index + 1}"
    placeholders[-1].name = placeholders[-1].target = "tangents_1"
    joint.recompile()
    with functorch_config.patch(aggressive_recomputation=True):
        return min_cut_rematerialization_partition(joint, None, num_fwd_outputs=1)


def force_stride_order():
    """Inductor's operator ``prims.inductor_force_stride_order(tensor, strides)``: the tensor,
    which Inductor then materialises as a buffer of those strides."""
    _require("prims.inductor_force_stride_order")
    return torch.ops.prims.inductor_force_stride_order.default


# -- AOTInductor -------------------------------------------------------------------------------


def aoti_compile_and_package(exported: "torch.export.ExportedProgram", file, options: Dict[str, object]) -> None:
    """Compile ``exported`` and write one AOTInductor package into ``file`` (FILE_CONTRACT §4)."""
    _require("torch._inductor.aoti_compile_and_package")
    torch._inductor.aoti_compile_and_package(exported, package_path=file, inductor_configs=options)


def aoti_compile(module: torch.nn.Module, args, kwargs, options: Dict[str, object]):
    """Compile one model of a package of several (``aot_inductor.package`` among ``options``):
    its files, for :func:`aoti_package`."""
    _require("torch._inductor.aot_compile")
    return torch._inductor.aot_compile(module, args, kwargs, options=options)


def aoti_package(file, files_by_name: Dict[str, object]) -> None:
    """One AOTInductor package of several models (:func:`aoti_compile`'s files, by model name)."""
    _require("torch._inductor.package.package_aoti")
    from torch._inductor.package import package_aoti

    package_aoti(file, files_by_name)


def inductor_cache_dir() -> str:
    """Where Inductor writes its generated code and libraries (for messages)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:
        return "Inductor's cache directory"
    return cache_dir()



def cpp_compiler_output(error: BaseException) -> Optional[str]:
    """What the C++ compiler printed, when ``error`` is Inductor's C++ compile error; else None."""
    try:
        from torch._inductor.exc import CppCompileError
    except ImportError:
        return None
    return str(error.output) if isinstance(error, CppCompileError) else None

# -- Inductor, patched for compile time (nequip.compile.inductor_speedups says why) -------------


class _SympyExpandingSimplify(types.ModuleType):
    """``sympy`` as a module's global, but for ``simplify``, which is ``sympy.expand``."""

    def __init__(self):
        import sympy

        super().__init__("sympy")
        self._sympy = sympy

    def __getattr__(self, name: str):
        return getattr(self._sympy, name)

    def simplify(self, expression, *args, **kwargs):
        return self._sympy.expand(expression)


@contextlib.contextmanager
def inductor_index_analysis_by_expand() -> Iterator[None]:
    """Inside: Inductor's index analysis (``torch._inductor.sizevars``) calls ``sympy.expand``
    where it calls ``sympy.simplify``; its cached answers are dropped on the way in and out. A
    torch whose analysis is not what this replaces (or unchecked) is left as it is."""
    import sympy

    try:
        from torch._inductor import sizevars
    except ImportError:
        sizevars = None
    cached = [getattr(sizevars, name, None) for name in ("stride_at_vec_range", "simplify_index_in_vec_range")]
    # a torch whose analysis is not what this replaces (or a patch already in place): as it is
    if (
        not torch_checked()
        or getattr(sizevars, "sympy", None) is not sympy
        or not all(hasattr(f, "cache_clear") for f in cached)
    ):
        yield
        return
    for function in cached:
        function.cache_clear()
    sizevars.sympy = _SympyExpandingSimplify()
    try:
        yield
    finally:
        sizevars.sympy = sympy
        for function in cached:
            function.cache_clear()


@contextlib.contextmanager
def inductor_wrapper_built_beside_kernels() -> Iterator[None]:
    """Inside: Inductor's ``CppBuilder.build`` builds a wrapper's object (``*wrapper.o``) in a
    thread while the next object builds (:class:`_BuildsBesideWrapper`). A torch without that
    builder (or unchecked) is left as it is."""
    try:
        from torch._inductor.cpp_builder import CppBuilder
    except ImportError:
        CppBuilder = None
    original = getattr(CppBuilder, "build", None)
    if not torch_checked() or original is None or not hasattr(CppBuilder, "get_target_file_path"):
        yield
        return
    builds = _BuildsBesideWrapper(original)

    def build(builder) -> None:
        builds.build(builder)

    CppBuilder.build = build
    try:
        yield
    finally:
        CppBuilder.build = original
        builds.close()


class _BuildsBesideWrapper:
    """A ``CppBuilder.build`` that builds a wrapper's object (``*wrapper.o``) in a thread.

    The next object file builds meanwhile; any other build (a link, a header) first waits for
    the wrapper, and so does :meth:`wait`, which raises the wrapper's compile error if it failed.
    """

    def __init__(self, build: Callable[[object], None]):
        self._build = build
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wrapper-g++")
        self._pending: List[concurrent.futures.Future] = []

    def build(self, builder) -> None:
        target = str(builder.get_target_file_path())
        if target.endswith("wrapper.o"):
            self.wait()
            self._pending.append(self._pool.submit(self._build, builder))
            return
        if not target.endswith(".o"):
            self.wait()
        try:
            self._build(builder)
        finally:
            self.wait()

    def wait(self) -> None:
        """Wait for the wrapper being built; its error, if any, is raised here."""
        while self._pending:
            self._pending.pop().result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


# -- queries of the model's code (interned in packages: never raise) ---------------------------


def engine_will_execute(node) -> Optional[bool]:
    """Whether the backward pass the autograd engine is running will execute ``node`` (a
    ``grad_fn`` or a leaf's gradient accumulator), or None where it cannot tell (outside a
    backward pass, or a torch without ``torch._C._will_engine_execute_node``)."""
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    if will_execute is None:
        return None
    try:
        return bool(will_execute(node))
    except RuntimeError:  # not inside a backward pass of the engine
        return None


def registered_schema(qualified_name: str) -> Optional[str]:
    """The schema of operator ``namespace::name`` (its default overload) as torch prints it, or
    None where none is registered (or this torch keeps schemas elsewhere)."""
    namespace, name = qualified_name.split("::")
    try:
        return str(getattr(getattr(torch.ops, namespace), name).default._schema)
    except AttributeError:
        return None
