"""Shared pytest configuration: fixture modules used by more than one test suite."""

pytest_plugins = [
    "fixtures.compiled",
    "fixtures.foreign_packages",
    "fixtures.model_files",
    "fixtures.training",
]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where torch sees a CUDA device and are skipped, with that
    reason, elsewhere (CI's machines have none)."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__})")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
