"""Two changes to how Inductor compiles an AOTInductor file, for compile time alone.

Neither changes what is generated: the benchmark model's kernel and wrapper sources come out
byte for byte the same with and without them, and its cold compile takes about two thirds of the
time (docs/benchmarks.md, "Compile time against the reference").

* **Index analysis without ``sympy.simplify``.** Before vectorising a loop, Inductor's C++
  backend asks, for every index expression, how it steps with the loop variable
  (``torch._inductor.sizevars.stride_at_vec_range``): it rewrites the expression and calls
  ``sympy.simplify`` on it and on the difference of two neighboring indices. These are
  polynomials in the loop and size symbols, for which ``sympy.expand`` gives the same canonical
  form; ``simplify`` tries every strategy it has first, thousands of times a compile, the largest
  part of the code generation's time. Inside :func:`faster_compile` the analysis sees
  ``expand`` in its place. Its cached answers are dropped on the way in and out, so no answer
  of one kind outlives its context.
* **The wrapper built beside the kernels.** AOTInductor runs g++ on the wrapper (the code that
  calls the kernels, at -O0) and then on the kernels (-O3), one after the other, taking about as
  long each for the benchmark model. Inside :func:`faster_compile` the wrapper's object is built in a
  thread while the next object builds; every other build (the shared library that links them)
  first waits for it.

Both reach into Inductor's internals, so each checks that what it replaces is there (and that
torch is a version they were checked with) and leaves Inductor as it is otherwise: such a torch
compiles the same files, more slowly.
"""

import contextlib
from typing import Iterator

from nequip.utils.torch_internals import inductor_index_analysis_by_expand, inductor_wrapper_built_beside_kernels


@contextlib.contextmanager
def faster_compile() -> Iterator[None]:
    """Inductor's index analysis with ``sympy.expand`` and the wrapper built beside the kernels
    (both in nequip.utils.torch_internals, with the rest of what nequip does with torch's internals)."""
    with inductor_index_analysis_by_expand(), inductor_wrapper_built_beside_kernels():
        yield
