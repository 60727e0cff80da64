"""Construct a model from a plain configuration dictionary (YAML, checkpoints, packages)."""

from typing import Any, Dict, Optional

import torch

from nequip.load import OTHER_RELEASE_PACKAGE

from .nequip_model import HyperparameterError, NequIPModel, _check_positive, _check_type_names, _edge_type_cutoffs
from .zbl_options import resolve_zbl


def build_model(config: Dict[str, Any], seed: Optional[int] = None) -> NequIPModel:
    """``NequIPModel(**config)`` with ``zbl`` resolved (:func:`with_resolved_zbl`); ``seed``
    (optional) makes the initial weights reproducible.

    NequIPModel checks every value (HyperparameterError names the argument); a key that is not
    one of its arguments is Python's TypeError.

    A model of the other NequIP release being fine-tuned cannot be rebuilt from hyperparameters:
    its ``config`` names its package (:data:`nequip.load.OTHER_RELEASE_PACKAGE`), which is loaded again
    (its code and architecture; the caller then loads the trained weights).
    """
    if OTHER_RELEASE_PACKAGE in config:
        from nequip.load import ModelFromPackage

        return ModelFromPackage(config[OTHER_RELEASE_PACKAGE]).train()
    config = with_resolved_zbl(config)
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return NequIPModel(**config)
    return NequIPModel(**config)


def with_resolved_zbl(config: Dict[str, Any]) -> Dict[str, Any]:
    """NequIPModel's arguments with ``zbl`` as the model takes it: ``true`` or a partial mapping
    resolved for the types and cutoffs (:func:`.zbl_options.resolve_zbl`; here, not in the
    model, because its defaults come from ASE's element data). The arguments it depends on are
    checked first, as the model would (HyperparameterError); a resolved ``zbl`` stays as it is."""
    if config.get("zbl") is None:
        return config
    type_names = _check_type_names(config.get("type_names", ()))
    _check_positive("r_max", config.get("r_max"))
    r_max = float(config["r_max"])
    cutoffs = _edge_type_cutoffs(config.get("per_edge_type_cutoff"), type_names, r_max) or [r_max] * len(type_names) ** 2
    try:
        zbl = resolve_zbl(config["zbl"], type_names, cutoffs)
    except ValueError as err:  # "zbl...: problem"
        raise HyperparameterError(*str(err).split(": ", 1)) from None
    return dict(config, zbl=zbl)
