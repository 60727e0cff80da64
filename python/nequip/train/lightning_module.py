"""What is learned: a NequIP model fitted to per-atom energies, forces and stresses."""

import math
from typing import Any, Dict

import lightning as L
import torch

from ..data import keys
from ..model import build_model
from .checkpoint import VERSIONS_KEY, load_checkpoint, model_state_dict, versions
from .metrics import QUANTITIES, ErrorMetrics, labelled_rows, predicted_and_reference, row_weights


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
        # elementwise: the weighted mean is taken here (loss)
        if loss["function"] == "huber":
            self.loss_function = torch.nn.HuberLoss(delta=loss["huber_delta"], reduction="none")
        else:
            self.loss_function = torch.nn.MSELoss(reduction="none")
        per_type = loss.get("per_type_forces") or {}
        self.register_buffer(
            "type_force_weights",
            torch.tensor([float(per_type.get(name, 1.0)) for name in self.type_names], dtype=torch.float64),
            persistent=False,
        )

        # energies and forces are always labelled; stresses only when they are learned
        self.evaluated = ["energy_per_atom", "forces"] + (["stress"] if "stress" in self.loss_coefficients else [])
        self.model.compute_stress = "stress" in self.evaluated
        per_type = self.type_names if config["metrics"]["per_type_forces_mae"] else ()
        self.metrics = torch.nn.ModuleDict({stage: ErrorMetrics(self.evaluated, per_type) for stage in ("val", "test")})

    @classmethod
    def from_checkpoint(cls, path) -> "NequIPLightningModule":
        """The module a training checkpoint holds, with its deployed (EMA) weights, on the CPU.

        Read by the one checkpoint reader (:func:`nequip.load.load_checkpoint`), so that a
        missing, empty or damaged path gets its message (Lightning's ``load_from_checkpoint``
        would open an empty path as a directory).
        """
        checkpoint = load_checkpoint(path)
        hyper_parameters = checkpoint["hyper_parameters"]
        module = cls(model_config=hyper_parameters["model_config"], config=hyper_parameters["config"])
        module.model.load_state_dict(model_state_dict(checkpoint))
        return module

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.model(batch)

    def loss(self, batch: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The weighted total (``loss``) and each quantity's term (``loss_forces``, ...).

        A term is the weighted mean of the loss function over the components of the rows
        (frames; atoms for forces) that have the label, each row weighted by
        :func:`~.metrics.row_weights`: ``sum_r w_r sum_c l(r, c) / (C sum_r w_r)``. So a weight
        of 0 is the row left out, 2 the row counted twice, and with every weight 1 it is the
        plain mean. A batch in which no row has the label (or all weigh 0) adds 0.
        """
        terms = {}
        for quantity in self.loss_coefficients:
            predicted, reference = predicted_and_reference(batch, out, quantity)
            labelled = labelled_rows(reference)
            weights = row_weights(batch, quantity, self.type_force_weights)[labelled].to(predicted.dtype)
            components = math.prod(reference.shape[1:])
            elementwise = self.loss_function(predicted[labelled], reference[labelled]).reshape(-1, components)
            normalisation = (weights.sum() * components).clamp_min(torch.finfo(weights.dtype).tiny)
            terms[quantity] = (weights.unsqueeze(-1) * elementwise).sum() / normalisation
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

        self.metrics[stage].update(batch, out)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, stage: str) -> None:
        """``<stage>_<row>_mae`` and ``_rmse`` of the epoch (already summed over processes), then reset."""
        metrics = self.metrics[stage]
        if not metrics.update_called:
            return
        values = {
            f"{stage}_{row}_{statistic}": result[statistic]
            for row, result in metrics.compute().items()
            for statistic in ("mae", "rmse")
        }
        self.log_dict(values)
        metrics.reset()

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
