"""Shared pytest configuration: fixture modules used by more than one test suite."""

pytest_plugins = [
    "fixtures.compiled",
    "fixtures.foreign_packages",
    "fixtures.model_files",
    "fixtures.training",
]


def pytest_collection_modifyitems(config, items):
    """The files that hold a test marked ``slow`` run first (in their order), so that the last
    files the pytest-xdist workers share out are short ones and neither worker waits long for the
    other at the end (`make test` gives each worker whole files, in this order).

    Tests marked ``gpu`` run where torch sees a CUDA device and are skipped, with that reason,
    elsewhere (CI's machines have none)."""
    import pytest
    import torch

    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort: each file stays whole

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__})")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
