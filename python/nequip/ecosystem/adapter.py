"""Our model as the other NequIP release's tools expect a packaged model to be.

Every package we write also carries ``model/eager_model.pkl``: a ``ModuleDict`` whose entry
``sole_model`` is an :class:`ExportedModel` around our eager model, so that that release's
``ModelFromPackage`` (and what it feeds: its ASE calculator, its ``nequip-compile``) loads our
model from the package's own code. The other release calls it on its atomic data dictionary
(FILE_CONTRACT §1 keys, plus its own: ``pbc``, ``atomic_numbers``, labels, ...) and reads
``metadata`` (a property there), ``type_names`` and ``model_dtype``.

This module is interned into every package: it imports torch only.
"""

from typing import Dict, List

import torch

# FILE_CONTRACT §1: the inputs our model takes (any other key of the other release's
# dictionary passes through untouched)
_INPUT_KEYS = ("pos", "atom_types", "edge_index", "cell", "edge_cell_shift", "batch", "num_atoms")


class ExportedModel(torch.nn.Module):
    """``model`` (our eager model) with the other release's model interface.

    ``forward(data)`` returns ``data`` with ``atomic_energy``, ``total_energy``, ``forces``,
    ``stress`` and ``virial`` (float64) added; ``metadata`` is our model's FILE_CONTRACT §2
    metadata (which that release writes into the files it compiles).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.type_names: List[str] = list(model.type_names)
        self.model_dtype: torch.dtype = model.model_dtype
        self.r_max = float(model.r_max)

    @property
    def metadata(self) -> Dict[str, str]:
        return dict(self.model.metadata())

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = dict(data)
        inputs = {key: data[key] for key in _INPUT_KEYS if key in data}
        if "cell" in inputs:
            # the other release keeps a frame's cell as (3, 3) or (1, 3, 3), a batch's as (F, 3, 3)
            inputs["cell"] = inputs["cell"].reshape(-1, 3, 3)
        predicted = self.model(inputs)
        for key in ("atomic_energy", "total_energy", "forces", "stress", "virial"):
            if key in predicted:
                out[key] = predicted[key]
        return out
