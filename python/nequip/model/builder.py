"""Construct a model from a plain configuration dictionary (YAML, checkpoints, packages)."""

import difflib
import inspect
from typing import Any, Dict

import torch

from .nequip_model import NequIPModel, _check_positive, _check_type_names, _edge_type_cutoffs
from .zbl_options import resolve_zbl

MODEL_ARGUMENTS = tuple(inspect.signature(NequIPModel.__init__).parameters)[1:]


def build_model(config: Dict[str, Any], seed: int = None) -> NequIPModel:
    """``NequIPModel(**config)`` after checking that every key is a model hyperparameter, with
    ``zbl`` resolved (``true`` or a partial mapping: :func:`.zbl_options.resolve_zbl`).

    ``seed`` (optional) makes the initial weights reproducible.
    """
    for key in config:
        if key not in MODEL_ARGUMENTS:
            close = difflib.get_close_matches(key, MODEL_ARGUMENTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(MODEL_ARGUMENTS)}"
            raise ValueError(f"unknown model hyperparameter {key!r}{hint}")
    if config.get("zbl") is not None:
        config = dict(config, zbl=_resolved_zbl(config))
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return NequIPModel(**config)
    return NequIPModel(**config)


def _resolved_zbl(config: Dict[str, Any]):
    """``config["zbl"]`` resolved for the config's types and cutoffs (checked first, as the model would)."""
    type_names = _check_type_names(config.get("type_names", ()))
    r_max = config.get("r_max")
    _check_positive("r_max", r_max)
    cutoffs = _edge_type_cutoffs(config.get("per_edge_type_cutoff"), type_names, float(r_max))
    return resolve_zbl(config["zbl"], type_names, cutoffs or [float(r_max)] * len(type_names) ** 2)
