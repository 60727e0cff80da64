"""What is learned: a NequIP model fitted to per-atom energies, forces and stresses."""

from typing import Any, Dict

import lightning as L
import torch
import torchmetrics

from ..data import keys
from ..model import build_model
from .checkpoint import VERSIONS_KEY, versions

# the quantities a model is fitted to and evaluated on: loss/metric name -> label key
QUANTITIES = {"energy_per_atom": keys.TOTAL_ENERGY, "forces": keys.FORCES, "stress": keys.STRESS}


def predicted_and_reference(batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor], quantity: str):
    """(prediction, label) of one quantity; energies are divided by the number of atoms."""
    key = QUANTITIES[quantity]
    predicted, reference = out[key], batch[key]
    if quantity == "energy_per_atom":
        num_atoms = batch[keys.NUM_ATOMS].unsqueeze(-1).to(predicted.dtype)
        predicted, reference = predicted / num_atoms, reference / num_atoms
    return predicted, reference


class NequIPLightningModule(L.LightningModule):
    """Fits ``NequIPModel(**model_config)`` with the loss, metrics and optimiser of ``config``.

    Args:
        model_config: the model's resolved hyperparameters (``model.config``).
        config: the full resolved training configuration (``config_to_dict``); its ``loss``,
            ``metrics``, ``optimizer``, ``lr_scheduler`` and ``trainer`` sections are used here.
    """

    def __init__(self, model_config: Dict[str, Any], config: Dict[str, Any]):
        super().__init__()
        # both go into every checkpoint: they rebuild the model and record the run
        self.save_hyperparameters()
        self.model = build_model(model_config)
        self.type_names = list(model_config["type_names"])

        loss = config["loss"]
        self.loss_coefficients = {q: float(loss[q]) for q in QUANTITIES if loss[q] > 0}
        if loss["function"] == "huber":
            self.loss_function = torch.nn.HuberLoss(delta=loss["huber_delta"])
        else:
            self.loss_function = torch.nn.MSELoss()

        # energies and forces are always labelled; stresses only when they are learned
        self.evaluated = ["energy_per_atom", "forces"] + (["stress"] if "stress" in self.loss_coefficients else [])
        self.model.compute_stress = "stress" in self.evaluated
        self.metrics = torch.nn.ModuleDict(
            {stage: self._make_metrics(config["metrics"]["per_type_forces_mae"]) for stage in ("val", "test")}
        )

    def _make_metrics(self, per_type_forces: bool) -> torch.nn.ModuleDict:
        metrics = {}
        for quantity in self.evaluated:
            metrics[f"{quantity}_mae"] = torchmetrics.MeanAbsoluteError()
            metrics[f"{quantity}_rmse"] = torchmetrics.MeanSquaredError(squared=False)
        if per_type_forces:
            for type_name in self.type_names:
                metrics[f"forces_mae_{type_name}"] = torchmetrics.MeanAbsoluteError()
        return torch.nn.ModuleDict(metrics)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.model(batch)

    def loss(self, batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The weighted total (``loss``) and each quantity's term (``loss_forces``, ...)."""
        terms = {
            quantity: self.loss_function(*predicted_and_reference(batch, out, quantity))
            for quantity in self.loss_coefficients
        }
        total = sum(self.loss_coefficients[q] * term for q, term in terms.items())
        return {"loss": total, **{f"loss_{q}": term for q, term in terms.items()}}

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.loss(batch, self(batch))
        num_frames = len(batch[keys.NUM_ATOMS])
        self.log_dict(
            {f"train_{name}": value for name, value in terms.items()},
            on_step=False, on_epoch=True, batch_size=num_frames, sync_dist=True,
        )  # fmt: skip
        return terms["loss"]

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: Dict[str, torch.Tensor], stage: str) -> None:
        out = self(batch)
        num_frames = len(batch[keys.NUM_ATOMS])
        terms = self.loss(batch, out)
        total = terms.pop("loss").detach()
        self.log(f"{stage}_loss", total, batch_size=num_frames, sync_dist=True, prog_bar=True)
        self.log_dict({f"{stage}_{name}": term.detach() for name, term in terms.items()}, batch_size=num_frames, sync_dist=True)

        metrics = self.metrics[stage]
        for quantity in self.evaluated:
            predicted, reference = predicted_and_reference(batch, out, quantity)
            metrics[f"{quantity}_mae"].update(predicted.detach(), reference)
            metrics[f"{quantity}_rmse"].update(predicted.detach(), reference)
        for type_index, type_name in enumerate(self.type_names):
            name = f"forces_mae_{type_name}"
            if name in metrics:
                of_type = batch[keys.ATOM_TYPES] == type_index
                metrics[name].update(out[keys.FORCES].detach()[of_type], batch[keys.FORCES][of_type])
        self.log_dict({f"{stage}_{name}": metric for name, metric in metrics.items()}, batch_size=num_frames)

    def configure_optimizers(self):
        config = self.hparams.config
        optimizer_config = config["optimizer"]
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer_config["name"]]
        optimizer = optimizer_class(
            self.parameters(),
            lr=optimizer_config["lr"],
            weight_decay=optimizer_config["weight_decay"],
            amsgrad=optimizer_config["amsgrad"],
        )
        schedule = config["lr_scheduler"]
        if schedule is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=schedule["factor"], patience=schedule["patience"], min_lr=schedule["min_lr"]
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val_loss",
                "interval": "epoch",
                "frequency": config["trainer"]["check_val_every_n_epoch"],
            },
        }

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint[VERSIONS_KEY] = versions()
