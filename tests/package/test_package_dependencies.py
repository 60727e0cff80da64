"""Libraries can be registered as extern or mocked; the defaults are visible and consistent."""

import pytest

from nequip.package import (
    DEFAULT_EXTERN_MODULES,
    DEFAULT_MOCK_MODULES,
    INTERN_MODULES,
    dependencies,
    register_libraries_as_external_for_packaging,
)

from .helpers import raises_exactly


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(dependencies, "_extern_modules", set(DEFAULT_EXTERN_MODULES))
    monkeypatch.setattr(dependencies, "_mock_modules", set(DEFAULT_MOCK_MODULES))


def test_defaults_are_disjoint_top_level_names():
    groups = (INTERN_MODULES, DEFAULT_EXTERN_MODULES, DEFAULT_MOCK_MODULES)
    names = [name for group in groups for name in group]
    assert len(names) == len(set(names))
    assert all(name.isidentifier() for name in names)


def test_registered_libraries_join_the_defaults():
    register_libraries_as_external_for_packaging(extern_modules=["my_kernels"], mock_modules=("plotting_lib",))
    assert dependencies.extern_modules() == tuple(sorted({*DEFAULT_EXTERN_MODULES, "my_kernels"}))
    assert dependencies.mock_modules() == tuple(sorted({*DEFAULT_MOCK_MODULES, "plotting_lib"}))


def test_a_single_name_is_one_library():
    register_libraries_as_external_for_packaging(extern_modules="scipy")
    assert "scipy" in dependencies.extern_modules()
    assert "s" not in dependencies.extern_modules()


def test_a_library_cannot_be_both_extern_and_mocked():
    with raises_exactly(ValueError, "cannot register matplotlib as both extern and mocked for packaging"):
        register_libraries_as_external_for_packaging(extern_modules=["matplotlib"])
    with raises_exactly(ValueError, "cannot register foo as both extern and mocked for packaging"):
        register_libraries_as_external_for_packaging(extern_modules=["foo"], mock_modules=["foo"])
    assert dependencies.extern_modules() == tuple(sorted(DEFAULT_EXTERN_MODULES))


def test_interned_libraries_cannot_be_extern_or_mocked():
    with raises_exactly(ValueError, "'e3nn' is packaged as source (interned) and cannot be extern or mocked"):
        register_libraries_as_external_for_packaging(extern_modules=["e3nn"])
    with raises_exactly(ValueError, "'nequip' is packaged as source (interned) and cannot be extern or mocked"):
        register_libraries_as_external_for_packaging(mock_modules=["nequip"])


def test_only_top_level_names():
    with raises_exactly(ValueError, "'numpy.linalg' is not a top-level module name (such as 'numpy')"):
        register_libraries_as_external_for_packaging(extern_modules=["numpy.linalg"])
