"""What packaging takes from a training checkpoint: the model, its weights, an example frame.

The checkpoint layout is ``nequip.train``'s, read by :mod:`nequip.load` (the one
reader of trained-model files): ``hyper_parameters.model_config`` rebuilds the model,
``hyper_parameters.config`` is the full resolved training configuration, and ``state_dict``
holds the weights under the ``model.`` prefix. When training kept an exponential moving
average (``config.ema``), Lightning's ``WeightAveraging`` callback stores the *averaged* weights
in ``state_dict`` (the raw ones go to ``current_model_state``), so ``state_dict`` always holds
the weights to deploy.

A run fine-tuned from a package (``model.from_package``) trains a model rebuilt with the
installed code from that package's hyperparameters, so its checkpoint reads like any other.
"""

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..load import ModelFromCheckpoint, PathLike, load_checkpoint
from .example_data import example_inputs


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The model stored in a training checkpoint, and what the run that trained it says."""

    path: Path
    model: torch.nn.Module
    """The model with the weights to deploy (the EMA weights when training kept them), eval mode."""
    training_config: Optional[Dict[str, Any]]
    """The full resolved training configuration, when the checkpoint has it."""

    @property
    def weights(self) -> str:
        """``"ema"`` when the weights are an exponential moving average, else ``"trained"``."""
        return "ema" if (self.training_config or {}).get("ema") is not None else "trained"

    @property
    def from_package(self) -> Optional[str]:
        """The package the run was fine-tuned from, if any."""
        return ((self.training_config or {}).get("model") or {}).get("from_package")

    def example_frame(self) -> Tuple[Dict[str, torch.Tensor], str]:
        """One frame to store with a package, and where it came from.

        The first frame of the training data named by the configuration (``data.train_file``,
        else ``data.file``, resolved against the current directory), if that file can be read
        and its species map onto the model's types; otherwise :func:`nequip.data.synthetic_frame`.
        """
        model = self.model
        data = (self.training_config or {}).get("data") or {}
        file = data.get("train_file") or data.get("file")
        per_edge_type_cutoff = model.config.get("per_edge_type_cutoff")
        if file is not None and Path(file).is_file():
            from nequip.data import TypeMapper, from_ase, read_frames

            num_types = len(model.type_names)
            cutoffs = None if per_edge_type_cutoff is None else np.reshape(per_edge_type_cutoff, (num_types, num_types))
            try:
                atoms = read_frames(file, index=0, format=data.get("format"))[0]
                frame = from_ase(
                    atoms,
                    TypeMapper(model.type_names, data.get("species_to_type")),
                    model.r_max,
                    per_edge_type_cutoff=cutoffs,
                    length_units_to_A=data.get("length_units_to_A", 1.0),
                    labels=(),
                )
            except ValueError as e:
                reason = f"the first frame of the training data file {Path(file).name} is unusable ({e})"
            else:
                return example_inputs(frame), f"first frame of the training data file {Path(file).name}"
        else:
            reason = "no training data file" if file is None else f"training data file {Path(file).name} not found"
        from nequip.data import synthetic_frame  # nequip.data (and ase) only when needed

        frame = synthetic_frame(model.type_names, model.r_max, per_edge_type_cutoff)
        return frame, f"synthetic ({reason})"


def read_checkpoint(path: PathLike) -> TrainedModel:
    """The model stored in the training checkpoint at ``path``, and its training configuration.

    Raises:
        FileNotFoundError, nequip.load.CheckpointError (a ValueError): a missing,
            damaged or foreign file (see :func:`nequip.load.load_checkpoint`).
    """
    path = Path(path)
    training_config = load_checkpoint(path)["hyper_parameters"].get("config")
    return TrainedModel(path=path, model=ModelFromCheckpoint(path), training_config=training_config)
