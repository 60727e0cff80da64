"""Fixtures of the compile tests: the systems, eager outputs and compiled files loaded once."""

from typing import Dict, Tuple

import pytest
import torch

from nequip.inference import open_model

from .systems import SYSTEMS


@pytest.fixture(scope="session")
def systems() -> Dict[str, Dict[str, torch.Tensor]]:
    return {name: build() for name, build in SYSTEMS.items()}


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
