"""Which code a package carries as source (intern), takes from the environment (extern), or mocks.

A package must keep working when the installed nequip and e3nn change, so the code the model
needs is *interned*: copied into the package as source and imported from there on loading.
Only large, stable libraries are *extern* (imported from the environment that loads the
package, which must therefore provide a compatible version; the metadata records the versions
used to build). torch and the Python standard library are always extern. Modules that the
interned code imports but the model never calls are *mocked*: the package holds a stub that
raises if anything in it is used.

The defaults are the smallest set that the NequIP model needs (found by packaging it):

- ``numpy``: imported by ``e3nn.math`` when e3nn is imported;
- ``opt_einsum_fx``: e3nn optimises the einsums of its generated tensor-product code with it;
- ``packaging``: ``e3nn/__init__`` parses the torch version with it;
- ``io``: standard library, imported by ``e3nn.util.codegen``; torch.package asks for modules
  with system access like ``io`` to be externed explicitly;
- mocked ``matplotlib`` (``TensorProduct.visualize``) and ``sympy`` (symbolic Legendre
  polynomials of ``e3nn.o3``).

torch.package interns only the modules the pickled model imports (and their imports), not
whole libraries: ``nequip.data.keys`` goes in, ``nequip.data``'s readers (ase, vesin) do not.

Extensions that need more register it once, at import time::

    from nequip.package import register_libraries_as_external_for_packaging
    register_libraries_as_external_for_packaging(extern_modules=["my_kernels"])
"""

import importlib.metadata
from typing import Final, Iterable, Set, Tuple

INTERN_MODULES: Final[Tuple[str, ...]] = ("nequip", "e3nn")
"""Libraries whose code is copied into every package."""

DEFAULT_EXTERN_MODULES: Final[Tuple[str, ...]] = ("io", "numpy", "opt_einsum_fx", "packaging")
"""Libraries a package imports from the environment that loads it (besides torch and the standard library)."""

DEFAULT_MOCK_MODULES: Final[Tuple[str, ...]] = ("matplotlib", "sympy")
"""Libraries replaced in a package by stubs that raise when used."""

_extern_modules: Set[str] = set(DEFAULT_EXTERN_MODULES)
_mock_modules: Set[str] = set(DEFAULT_MOCK_MODULES)


def register_libraries_as_external_for_packaging(
    extern_modules: Iterable[str] = (), mock_modules: Iterable[str] = ()
) -> None:
    """Add top-level libraries to the extern or the mock list of every package built afterwards.

    Extern a library only if it provides compiled torch ops or is large and stable: a package
    with an extern library runs only where a compatible version is installed. Mock a library
    only if the packaged code imports it without using it. Refactoring the import away is
    better than either.

    Raises:
        ValueError: for a dotted (not top-level) name, an interned library (``nequip``,
            ``e3nn``), or a library that would be both extern and mocked.
    """
    extern_modules = _check_names(extern_modules)
    mock_modules = _check_names(mock_modules)
    both = (extern_modules | _extern_modules) & (mock_modules | _mock_modules)
    if both:
        raise ValueError(f"cannot register {', '.join(sorted(both))} as both extern and mocked for packaging")
    _extern_modules.update(extern_modules)
    _mock_modules.update(mock_modules)


def extern_modules() -> Tuple[str, ...]:
    """The libraries currently registered as extern, sorted."""
    return tuple(sorted(_extern_modules))


def mock_modules() -> Tuple[str, ...]:
    """The libraries currently registered as mocked, sorted."""
    return tuple(sorted(_mock_modules))


def _check_names(names: Iterable[str]) -> Set[str]:
    if isinstance(names, str):
        # a bare string would register each of its letters
        names = [names]
    names = set(names)
    for name in sorted(names):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{name!r} is not a top-level module name (such as 'numpy')")
        if name in INTERN_MODULES:
            raise ValueError(f"{name!r} is packaged as source (interned) and cannot be extern or mocked")
    return names


def installed_version(module_name: str) -> str:
    """The installed version of the distribution that provides the top-level module ``module_name``
    (its ``__version__`` if no distribution says, ``"unknown"`` if neither does)."""
    distributions = importlib.metadata.packages_distributions().get(module_name, [module_name])
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(getattr(__import__(module_name), "__version__", "unknown"))
