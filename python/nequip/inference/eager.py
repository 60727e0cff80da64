"""A trained model (checkpoint or package) evaluated by torch: the eager side of the opener."""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nequip import _runtime
from nequip.data import batch_frames, keys
from nequip.load import CONFIG_ENTRY, PACKAGE, TRAINED_KINDS, list_package_entries, load_checkpoint, load_model
from nequip.load import model_file_kind
from nequip.load import read_package_entry
from nequip.utils.devices import torch_device

from .opened import OpenedModel, PathLike, has_volume

_INPUT_KEYS = (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX, keys.CELL, keys.EDGE_CELL_SHIFT)


class EagerModel(OpenedModel):
    """The model of a checkpoint or package (:func:`nequip.load.load_model`), evaluated eagerly
    on ``device`` (default: the CPU), frames in batches.

    ``module`` is the torch model itself. Its outputs pass the same checks as the C++ runtime's
    (:func:`nequip._runtime.check_finite_outputs`, and one close-pair warning per model).
    """

    def __init__(self, path: PathLike, device: Optional[str] = None, module: Optional[torch.nn.Module] = None):
        """``module``: the model already loaded from ``path`` (or made in memory: then ``path``
        only names it in messages); by default it is loaded from ``path``."""
        self.path = Path(path)
        self.kind = model_file_kind(path, TRAINED_KINDS) if module is None else "eager"
        self._device = torch_device(device or "cpu")
        self.device = str(self._device)
        self.module = (load_model(path) if module is None else module).to(self._device).eval()
        self.metadata = dict(self.module.metadata())
        self.type_names = tuple(self.module.type_names)
        self.r_max = float(self.module.r_max)
        self.per_edge_type_cutoff = cutoff_matrix(self.metadata)
        self.gives_stress = True
        self.committee_size = int(getattr(self.module, "committee_size", 1))  # an in-memory nequip.model.Committee
        self._warned_close_pair = False

    def training_config(self) -> Optional[Dict[str, Any]]:
        """The training configuration the model came from (a checkpoint's, or the one a package
        keeps), or None."""
        if self.kind == "eager":
            return None
        if self.kind != PACKAGE:
            return load_checkpoint(self.path)["hyper_parameters"].get("config")
        if not any(entry.partition("/")[2] == CONFIG_ENTRY for entry, _ in list_package_entries(self.path)):
            return None
        import yaml

        return yaml.safe_load(read_package_entry(self.path, CONFIG_ENTRY).decode("utf-8"))

    def example_frame(self) -> Tuple[Dict[str, torch.Tensor], str]:
        """One frame to compile the model on, and where it came from: a package's stored
        example frame; for a checkpoint, the first frame of its training data if that can be
        read, else a synthetic one (:meth:`nequip.package.checkpoint.TrainedModel.example_frame`)."""
        if self.kind == PACKAGE:
            from nequip.package import load_example_data

            return load_example_data(self.path), "the package's example frame"
        from nequip.package.checkpoint import TrainedModel

        trained = TrainedModel(path=self.path, model=self.module.cpu(), training_config=self.training_config())
        frame = trained.example_frame()
        self.module.to(self._device)
        return frame

    def __call__(self, frame: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.evaluate([frame], batch_size=1)[0]

    def evaluate(self, frames: Sequence[Dict[str, torch.Tensor]], batch_size: int = 8) -> List[Dict[str, torch.Tensor]]:
        outputs: List[Dict[str, torch.Tensor]] = []
        for start in range(0, len(frames), batch_size):
            chunk = [{key: frame[key] for key in _INPUT_KEYS if key in frame} for frame in frames[start : start + batch_size]]
            with_volume = [has_volume(frame) for frame in chunk]
            self.module.compute_forces = True
            self.module.compute_stress = any(with_volume)
            inputs = chunk[0] if len(chunk) == 1 else batch_frames(chunk)
            with torch.enable_grad():  # forces and stress are autograd derivatives
                out = self.module({key: value.to(self._device) for key, value in inputs.items()})
            first_atom = 0
            for index, (frame, volume) in enumerate(zip(chunk, with_volume)):
                atoms = slice(first_atom, first_atom + frame[keys.POS].shape[0])
                first_atom = atoms.stop
                result = {
                    keys.TOTAL_ENERGY: out[keys.TOTAL_ENERGY][index].reshape(1, 1),
                    keys.ATOMIC_ENERGY: out[keys.ATOMIC_ENERGY][atoms].reshape(-1, 1),
                    keys.FORCES: out[keys.FORCES][atoms].reshape(-1, 3),
                }
                if volume:
                    result[keys.STRESS] = out[keys.STRESS][index].reshape(1, 3, 3)
                    result[keys.VIRIAL] = out[keys.VIRIAL][index].reshape(1, 3, 3)
                if keys.FORCE_DEVIATION in out:  # a committee's
                    result[keys.FORCE_DEVIATION] = out[keys.FORCE_DEVIATION][atoms].reshape(-1)
                    result[keys.ENERGY_DEVIATION] = out[keys.ENERGY_DEVIATION][index].reshape(1, 1)
                    if keys.VIRIAL_DEVIATION in out:
                        result[keys.VIRIAL_DEVIATION] = out[keys.VIRIAL_DEVIATION][index].reshape(1, 3, 3)
                result = {key: value.detach().to("cpu", torch.float64) for key, value in result.items()}
                self._check_outputs(frame, result)
                outputs.append(result)
        return outputs

    def _check_outputs(self, frame: Dict[str, torch.Tensor], result: Dict[str, torch.Tensor]) -> None:
        """The runtime's checks of a call's outputs: finite energies and forces (else the error
        naming overlapping atoms or the model), and one warning for atoms closer than the model
        has seen."""
        arrays = {key: None if value is None else value.detach().cpu().numpy() for key, value in frame.items()}
        geometry = (
            arrays[keys.POS],
            arrays[keys.EDGE_INDEX],
            arrays.get(keys.EDGE_CELL_SHIFT),
            None if arrays.get(keys.CELL) is None else arrays[keys.CELL].reshape(3, 3),
        )
        _runtime.check_finite_outputs(
            str(self.path),
            self.r_max,
            *geometry,
            result[keys.ATOMIC_ENERGY].numpy().reshape(-1),
            result[keys.FORCES].numpy(),
        )
        if not self._warned_close_pair:
            message = _runtime.close_pair_warning(str(self.path), self.metadata, *geometry)
            if message is not None:
                import warnings

                warnings.warn(message, _runtime.CloseAtomsWarning, stacklevel=4)
                self._warned_close_pair = True


def cutoff_matrix(metadata: Dict[str, str]) -> Optional[np.ndarray]:
    """The (T, T) per-edge-type cutoffs of FILE_CONTRACT §2 metadata (row = center type), or
    None when the model cuts every pair off at r_max."""
    flat = metadata.get("per_edge_type_cutoff")
    if flat is None:
        return None
    num_types = int(metadata["num_types"])
    return np.asarray([float(word) for word in flat.split(" ")], dtype=np.float64).reshape(num_types, num_types)
