"""Fixtures of the compile tests: the systems, eager outputs and compiled files loaded once."""

from typing import Dict, Tuple

import pytest
import torch

from nequip.inference import open_model

from .systems import SYSTEMS


@pytest.fixture(scope="session")
def systems() -> Dict[str, Dict[str, torch.Tensor]]:
    systems = {name: build() for name, build in SYSTEMS.items()}
    _check_hard_cases(systems)
    return systems


def _check_hard_cases(systems) -> None:
    """The agreement tests are only as good as their systems: each is what its name claims."""
    assert systems["single_atom"]["pos"].shape[0] == 1
    assert systems["single_atom"]["edge_index"].shape[1] == 0
    assert systems["no_edges"]["edge_index"].shape[1] == 0
    assert systems["no_edges"]["pos"].shape[0] > 1
    assert "cell" not in systems["molecule"] and systems["molecule"]["edge_index"].shape[1] > 0
    assert systems["large_cell"]["pos"].shape[0] > 1000
    small = systems["cell_smaller_than_cutoff"]
    own_images = small["edge_index"][0] == small["edge_index"][1]
    assert small["pos"].shape[0] == 2 and own_images.sum() > 0  # atoms see their own images
    cell = systems["periodic_triclinic"]["cell"][0]
    off_diagonal = cell - torch.diag(torch.diagonal(cell))
    assert off_diagonal.abs().max() > 0.1


@pytest.fixture(scope="session")
def eager_outputs(compiled_models, systems) -> Dict[Tuple[str, str], Dict[str, torch.Tensor]]:
    """Eager model outputs by (model_dtype, system), computed once."""

    class Lazy(dict):
        def __missing__(self, key):
            dtype, system = key
            out = compiled_models.eager[dtype](dict(systems[system]))
            self[key] = {name: value.detach() for name, value in out.items()}
            return self[key]

    return Lazy()


@pytest.fixture(scope="session")
def loaded_models(compiled_models):
    """Compiled files loaded (and their metadata checked) once, by the keys of compiled_models."""

    class Lazy(dict):
        def __missing__(self, key):
            self[key] = open_model(compiled_models[key])
            return self[key]

    return Lazy()
