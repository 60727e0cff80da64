"""Construct a model from a plain configuration dictionary (YAML, checkpoints, packages)."""

import difflib
import inspect
from typing import Any, Dict

import torch

from .nequip_model import NequIPModel

MODEL_ARGUMENTS = tuple(inspect.signature(NequIPModel.__init__).parameters)[1:]
# the key of a model config that names the package of the other NequIP release the model comes from
OTHER_RELEASE_PACKAGE = "other_release_package"


def build_model(config: Dict[str, Any], seed: int = None) -> NequIPModel:
    """``NequIPModel(**config)`` after checking that every key is a model hyperparameter.

    ``seed`` (optional) makes the initial weights reproducible.

    A model of the other NequIP release being fine-tuned cannot be rebuilt from hyperparameters:
    its ``config`` names its package (:data:`OTHER_RELEASE_PACKAGE`), which is loaded again
    (its code and architecture; the caller then loads the trained weights).
    """
    if OTHER_RELEASE_PACKAGE in config:
        from nequip.load import ModelFromPackage

        return ModelFromPackage(config[OTHER_RELEASE_PACKAGE]).train()
    for key in config:
        if key not in MODEL_ARGUMENTS:
            close = difflib.get_close_matches(key, MODEL_ARGUMENTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(MODEL_ARGUMENTS)}"
            raise ValueError(f"unknown model hyperparameter {key!r}{hint}")
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return NequIPModel(**config)
    return NequIPModel(**config)
