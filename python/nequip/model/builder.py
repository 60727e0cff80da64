"""Construct a model from a plain configuration dictionary (YAML, checkpoints, packages)."""

from typing import Any, Dict, Optional

import torch

from nequip.load import OTHER_RELEASE_PACKAGE

from .nequip_model import NequIPModel


def build_model(config: Dict[str, Any], seed: Optional[int] = None) -> NequIPModel:
    """``NequIPModel(**config)``; ``seed`` (optional) makes the initial weights reproducible.

    NequIPModel checks every value (HyperparameterError names the argument); a key that is not
    one of its arguments is Python's TypeError.

    A model of the other NequIP release being fine-tuned cannot be rebuilt from hyperparameters:
    its ``config`` names its package (:data:`nequip.load.OTHER_RELEASE_PACKAGE`), which is loaded again
    (its code and architecture; the caller then loads the trained weights).
    """
    if OTHER_RELEASE_PACKAGE in config:
        from nequip.load import ModelFromPackage

        return ModelFromPackage(config[OTHER_RELEASE_PACKAGE]).train()
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return NequIPModel(**config)
    return NequIPModel(**config)
