"""Two changes to how Inductor compiles an AOTInductor file, for compile time alone.

Neither changes what is generated: the benchmark model's kernel and wrapper sources come out
byte for byte the same with and without them, and its cold compile on 2 cores went from 257 to
177 s (docs/benchmarks.md, "Compile time").

* **Index analysis without ``sympy.simplify``.** Before vectorising a loop, Inductor's C++
  backend asks, for every index expression, how it steps with the loop variable
  (``torch._inductor.sizevars.stride_at_vec_range``): it rewrites the expression and calls
  ``sympy.simplify`` on it and on the difference of two neighbouring indices. These are
  polynomials in the loop and size symbols, for which ``sympy.expand`` gives the same canonical
  form; ``simplify`` tries every strategy it has first and took 15-30 ms a call, thousands of
  calls, 38 s of the benchmark model's compile. Inside :func:`faster_compile` the analysis sees
  ``expand`` in its place. Its cached answers are dropped on the way in and out, so no answer
  of one kind outlives its context.
* **The wrapper built beside the kernels.** AOTInductor runs g++ on the wrapper (the code that
  calls the kernels, at -O0) and then on the kernels (-O3), one after the other, about 45 s each
  for the benchmark model. Inside :func:`faster_compile` the wrapper's object is built in a
  thread while the next object builds; every other build (the shared library that links them)
  first waits for it.

Both reach into Inductor's internals, so each checks that what it replaces is there and leaves
Inductor as it is otherwise: a torch without them compiles the same files, more slowly.
"""

import concurrent.futures
import contextlib
import types
from typing import Callable, Iterator, List

import sympy


@contextlib.contextmanager
def faster_compile() -> Iterator[None]:
    """Inductor's index analysis with ``sympy.expand`` and the wrapper built beside the kernels."""
    with _index_analysis_by_expand(), _wrapper_built_beside_kernels():
        yield


class _SympyExpandingSimplify(types.ModuleType):
    """``sympy`` as a module's global, but for ``simplify``, which is ``sympy.expand``."""

    def __init__(self):
        super().__init__("sympy")

    def __getattr__(self, name: str):
        return getattr(sympy, name)

    @staticmethod
    def simplify(expression, *args, **kwargs):
        return sympy.expand(expression)


@contextlib.contextmanager
def _index_analysis_by_expand() -> Iterator[None]:
    try:
        from torch._inductor import sizevars
    except ImportError:
        sizevars = None
    cached = [getattr(sizevars, name, None) for name in ("stride_at_vec_range", "simplify_index_in_vec_range")]
    # a torch whose analysis is not what this replaces (or a patch already in place): as it is
    if getattr(sizevars, "sympy", None) is not sympy or not all(hasattr(f, "cache_clear") for f in cached):
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
def _wrapper_built_beside_kernels() -> Iterator[None]:
    try:
        from torch._inductor.cpp_builder import CppBuilder
    except ImportError:
        CppBuilder = None
    original = getattr(CppBuilder, "build", None)
    if original is None or not hasattr(CppBuilder, "get_target_file_path"):
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
