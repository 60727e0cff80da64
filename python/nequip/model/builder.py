"""Construct a model from a plain configuration dictionary (YAML, checkpoints, packages)."""

from typing import Any, Dict, Optional

import torch

from .nequip_model import NequIPModel


def build_model(config: Dict[str, Any], seed: Optional[int] = None) -> NequIPModel:
    """``NequIPModel(**config)``; ``seed`` (optional) makes the initial weights reproducible.

    NequIPModel checks every value (HyperparameterError names the argument); a key that is not
    one of its arguments is Python's TypeError.
    """
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return NequIPModel(**config)
    return NequIPModel(**config)
