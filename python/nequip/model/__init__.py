"""The NequIP model and its construction from a configuration."""

from .builder import build_model, with_resolved_zbl
from .committee import Committee, CommitteeError
from .nequip_model import MODEL_ARGUMENTS, HyperparameterError, NequIPModel, resolve_hyperparameters

__all__ = [
    "MODEL_ARGUMENTS",
    "Committee",
    "CommitteeError",
    "HyperparameterError",
    "NequIPModel",
    "build_model",
    "resolve_hyperparameters",
    "with_resolved_zbl",
]
