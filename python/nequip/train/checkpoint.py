"""Training checkpoints (FILE_CONTRACT §6): atomic writes, checked reads, the model inside.

A checkpoint is Lightning's dictionary plus our keys:

- ``state_dict``: the LightningModule's weights (``model.*``); with EMA these are the
  averaged weights (Lightning's WeightAveraging puts them there), the ones to deploy;
- ``current_model_state`` / ``averaging_state``: with EMA, the raw training weights and the
  averaging counter, so that training resumes exactly;
- ``optimizer_states``, ``lr_schedulers``, ``callbacks``, ``loops``: Lightning's;
- ``hyper_parameters``: ``model_config`` (``NequIPModel(**model_config)`` rebuilds the
  model) and ``config`` (the full resolved training configuration);
- ``nequip_versions``: versions of torch, e3nn, lightning and nequip that wrote it.
"""

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from lightning.fabric.plugins.io import TorchCheckpointIO

from ..model import NequIPModel, build_model
from ..utils.atomic_io import atomic_open

VERSIONS_KEY = "nequip_versions"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, corrupt, or not ours)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own writer stages the bytes in the system temporary directory and moves
    them over; across file systems that move is a copy, and an interruption leaves a
    truncated ``last.ckpt``. A rename in the same directory is atomic.
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


def versions() -> Dict[str, str]:
    """Versions of the software that a checkpoint depends on."""
    import e3nn
    import lightning

    import nequip

    return {
        "torch": str(torch.__version__),
        "e3nn": e3nn.__version__,
        "lightning": lightning.__version__,
        "nequip": nequip.__version__,
    }


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a training checkpoint, refusing one that is missing, truncated, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged archives
        raise CheckpointError(
            f"checkpoint {path} cannot be read: the file is truncated or corrupt"
        ) from err
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "model_config" not in checkpoint.get("hyper_parameters", {})
    ):
        raise CheckpointError(f"{path} is not a nequip training checkpoint (no model_config and state_dict)")
    return checkpoint


def model_state_dict(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The model's weights in a checkpoint (the EMA weights when EMA was on)."""
    prefix = "model."
    return {name[len(prefix) :]: value for name, value in checkpoint["state_dict"].items() if name.startswith(prefix)}


def model_from_checkpoint(path: Union[str, Path]) -> NequIPModel:
    """The trained model of a checkpoint, eager, in eval mode, on the CPU."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["hyper_parameters"]["model_config"])
    model.load_state_dict(model_state_dict(checkpoint))
    return model.eval()
