"""What packaging takes from a training checkpoint: the model, its weights, an example frame.

The checkpoint layout is ``nequip.train``'s (see :mod:`nequip.train.checkpoint`, whose reader
this uses): ``hyper_parameters.model_config`` rebuilds the model, ``hyper_parameters.config``
is the full resolved training configuration, and ``state_dict`` holds the weights under the
``model.`` prefix. When training kept an exponential moving average (``config.ema``), Lightning's
``WeightAveraging`` callback stores the *averaged* weights in ``state_dict`` (the raw ones go to
``current_model_state``), so ``state_dict`` always holds the weights to deploy.

A run fine-tuned from a package (``model.from_package``) trains a model rebuilt with the
installed code from that package's hyperparameters, so its checkpoint reads like any other.

The installed model code is imported only when a checkpoint is read: loading a *package*
never needs it.
"""

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .example_data import example_inputs, synthetic_frame
from .format import PathLike


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The model stored in a training checkpoint."""

    path: Path
    model_config: Dict[str, Any]
    """The model's resolved hyperparameters: ``NequIPModel(**model_config)``."""
    state_dict: Dict[str, torch.Tensor]
    """The weights to deploy (the EMA weights when training kept them)."""
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

    def build_model(self) -> torch.nn.Module:
        """The model with these weights, built by the installed nequip."""
        from nequip.model import build_model
        from nequip.train.checkpoint import CheckpointError

        model = build_model(self.model_config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: the weights do not fit the model described by its model_config: {e}")
        return model

    def example_frame(self, model: torch.nn.Module) -> Tuple[Dict[str, torch.Tensor], str]:
        """One frame to store with a package, and where it came from.

        The first frame of the training data named by the configuration (``data.train_file``,
        else ``data.file``, resolved against the current directory), if that file can be read
        and its species map onto the model's types; otherwise :func:`synthetic_frame`.
        """
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
        frame = synthetic_frame(model.type_names, model.r_max, per_edge_type_cutoff)
        return frame, f"synthetic ({reason})"


def read_checkpoint(path: PathLike) -> TrainedModel:
    """The model stored in the training checkpoint at ``path``.

    Raises:
        nequip.train.checkpoint.CheckpointError (a ValueError): a missing, damaged or foreign file.
    """
    from nequip.train.checkpoint import load_checkpoint, model_state_dict

    path = Path(path)
    checkpoint = load_checkpoint(path)
    hyper_parameters = checkpoint["hyper_parameters"]
    return TrainedModel(
        path=path,
        model_config=dict(hyper_parameters["model_config"]),
        state_dict=model_state_dict(checkpoint),
        training_config=hyper_parameters.get("config"),
    )
