"""Training checkpoints (FILE_CONTRACT §6): what is written, and atomic writes.

They are read by :mod:`nequip.load` (``load_checkpoint``, ``ModelFromCheckpoint``),
the one reader of trained-model files, re-exported here for the training code.

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

from typing import Any, Dict, Optional

import torch
from lightning.fabric.plugins.io import TorchCheckpointIO

# the reader lives below train/ and package/, beside the package reader
from ..load import CheckpointError, load_checkpoint, model_state_dict
from ..utils.atomic_io import atomic_open

VERSIONS_KEY = "nequip_versions"

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


__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "VERSIONS_KEY",
    "load_checkpoint",
    "model_state_dict",
    "versions",
]
