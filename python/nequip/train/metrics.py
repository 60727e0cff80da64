"""Errors of predicted energies, forces and stresses: the one definition of every metric.

Validation, the test stage after training and ``nequip-test`` all accumulate their errors
with :class:`ErrorMetrics`, so a figure means the same wherever it is printed. Each *row* is
a quantity of :data:`QUANTITIES` or the forces on the atoms of one type (``forces_<type>``);
each has an MAE and an RMSE over every component of every frame seen (energies per atom:
one value per frame). Units are eV and Å.

In training batches a frame that lacks a label carries NaN in its place (the data's own labels
are finite: ``nequip.data.from_ase`` refuses others), and counts for neither the metrics nor the
loss of that quantity (:func:`labelled_rows`). Metrics are never weighted: the loss weights of
frames, types and atoms (:func:`row_weights`) are the loss's only.
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
import torchmetrics

from ..data import keys

# the quantities a model is fitted to and evaluated on: name -> (label key, unit)
QUANTITIES: Dict[str, Tuple[str, str]] = {
    "energy_per_atom": (keys.TOTAL_ENERGY, "eV/atom"),
    "forces": (keys.FORCES, "eV/Å"),
    "stress": (keys.STRESS, "eV/Å³"),
}


def predicted_and_reference(
    batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor], quantity: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(prediction, label) of one quantity of a batch; energies are divided by the number of atoms."""
    key = QUANTITIES[quantity][0]
    predicted, reference = out[key], batch[key]
    if quantity == "energy_per_atom":
        num_atoms = batch[keys.NUM_ATOMS].reshape(-1, 1).to(predicted.dtype)
        predicted, reference = predicted.reshape(-1, 1) / num_atoms, reference.reshape(-1, 1) / num_atoms
    return predicted, reference


def labelled_rows(reference: torch.Tensor) -> torch.Tensor:
    """(rows,) bool: the rows of a quantity's labels (frames, or atoms for forces) that a frame
    has, i.e. that are finite (:func:`predicted_and_reference`'s ``reference``)."""
    return torch.isfinite(reference).reshape(reference.shape[0], -1).all(dim=1)


def row_weights(batch: Dict[str, torch.Tensor], quantity: str, type_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(rows,) loss weights of a quantity's rows, float64: the frame's weight (``frame_weight``,
    1 where absent), and for forces also the atom's (``force_weight``) and its type's
    (``type_weights`` (num_types,), by ``atom_types``)."""
    num_frames = batch[keys.NUM_ATOMS].shape[0]
    device = batch[keys.NUM_ATOMS].device
    frame = batch.get(keys.FRAME_WEIGHT)
    if frame is None:
        frame = torch.ones(num_frames, dtype=torch.float64, device=device)
    frame = frame.reshape(-1).to(torch.float64)
    if quantity != "forces":
        return frame
    weights = frame[batch[keys.BATCH]] if keys.BATCH in batch else frame.expand(batch[keys.ATOM_TYPES].shape[0])
    if keys.FORCE_WEIGHT in batch:
        weights = weights * batch[keys.FORCE_WEIGHT].reshape(-1).to(torch.float64)
    if type_weights is not None:
        weights = weights * type_weights[batch[keys.ATOM_TYPES]]
    return weights


class ErrorMetrics(torchmetrics.Metric):
    """MAE and RMSE of ``quantities`` (and, with ``type_names``, of the forces per type).

    ``update(batch, out)`` takes a batch of labelled frames (FILE_CONTRACT §1, batched:
    ``num_atoms``, ``atom_types`` and the labels) and the model's outputs on it;
    ``compute()`` returns ``{row: {"mae", "rmse", "count"}}`` as 0-d float64 tensors (count:
    the number of values). Sums are float64 and, under DDP, summed over processes.
    """

    full_state_update = False

    def __init__(self, quantities: Sequence[str], type_names: Sequence[str] = ()):
        super().__init__()
        for quantity in quantities:
            if quantity not in QUANTITIES:
                raise ValueError(f"unknown quantity {quantity!r}: expected one of {', '.join(QUANTITIES)}")
        self.quantities = list(quantities)
        self.type_names = list(type_names) if "forces" in self.quantities else []
        self.rows = []
        for quantity in self.quantities:
            self.rows.append(quantity)
            if quantity == "forces":
                self.rows += [f"forces_{name}" for name in self.type_names]
        for row in self.rows:
            for statistic in ("absolute", "squared", "count"):
                self.add_state(f"{row}_{statistic}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @staticmethod
    def unit(row: str) -> str:
        """The unit of a row's MAE and RMSE."""
        return QUANTITIES["forces" if row.startswith("forces_") else row][1]

    def update(self, batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor]) -> None:
        """Adds the errors of the frames (atoms) that have each label; see the module docstring."""
        for quantity in self.quantities:
            predicted, reference = predicted_and_reference(batch, out, quantity)
            labelled = labelled_rows(reference)
            error = (predicted.detach()[labelled] - reference[labelled]).to(torch.float64)
            self._add(quantity, error)
            if quantity == "forces":
                atom_types = batch[keys.ATOM_TYPES][labelled]
                for type_index, type_name in enumerate(self.type_names):
                    self._add(f"forces_{type_name}", error[atom_types == type_index])

    def _add(self, row: str, error: torch.Tensor) -> None:
        setattr(self, f"{row}_absolute", getattr(self, f"{row}_absolute") + error.abs().sum())
        setattr(self, f"{row}_squared", getattr(self, f"{row}_squared") + error.square().sum())
        setattr(self, f"{row}_count", getattr(self, f"{row}_count") + error.numel())

    def compute(self) -> Dict[str, Dict[str, torch.Tensor]]:
        result = {}
        for row in self.rows:
            count = getattr(self, f"{row}_count")
            if count == 0:
                continue  # a type absent from every frame seen
            result[row] = {
                "mae": getattr(self, f"{row}_absolute") / count,
                "rmse": (getattr(self, f"{row}_squared") / count).sqrt(),
                "count": count,
            }
        return result
