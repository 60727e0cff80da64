"""Training callbacks of our own; the rest (checkpoints, early stopping, LR monitor) are Lightning's."""

import time
from typing import Any, Dict, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

# the headline figures of an epoch, in print order
SUMMARY_METRICS = (
    "train_loss",
    "val_loss",
    "val_energy_per_atom_mae",
    "val_forces_mae",
    "val_stress_mae",
)


class EpochSummary(Callback):
    """One line per epoch: losses, validation MAEs (eV/atom, eV/Å, eV/Å³), learning rate, time."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts += [f"{name} {metrics[name].item():.4g}" for name in SUMMARY_METRICS if name in metrics]
        parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        pl_module.print("  ".join(parts))


class ExponentialMovingAverage(Callback):
    """Exponential moving average of the weights, used for validation and saved for deployment.

    After every optimiser step ``average = decay * average + (1 - decay) * weight``. Validation
    runs with the averages swapped in, training ends with them in the model, and a checkpoint
    holds them as its ``state_dict`` with the raw weights in ``current_model_state`` (the layout
    of Lightning's WeightAveraging), so resuming continues both exactly.

    Lightning's WeightAveraging pairs the tensors of the model and of a deep copy by position;
    e3nn's compiled tensor products gain buffers when deep-copied, so those pairs go wrong.
    This keeps one average per parameter, by name; buffers are not learned and not averaged.
    """

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.averages: Optional[Dict[str, torch.Tensor]] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.averages is None:
            self.averages = {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for name, parameter in pl_module.named_parameters():
            self.averages[name].lerp_(parameter, 1.0 - self.decay)

    @torch.no_grad()
    def _swap(self, pl_module: L.LightningModule) -> None:
        for name, parameter in pl_module.named_parameters():
            current = parameter.detach().clone()
            parameter.copy_(self.averages[name])
            self.averages[name].copy_(current)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averages is not None:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averages is not None:
            self._swap(pl_module)

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, parameter in pl_module.named_parameters():
            parameter.copy_(self.averages[name])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        if self.averages is None:
            return
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            name: self.averages[name].clone() if name in self.averages else value
            for name, value in checkpoint["state_dict"].items()
        }

    @torch.no_grad()
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        # the model was loaded from state_dict (the averages) before the callbacks
        if self.averages is None or "current_model_state" not in checkpoint:
            return
        for name in self.averages:
            self.averages[name].copy_(checkpoint["state_dict"][name])
        pl_module.load_state_dict(checkpoint["current_model_state"])


class NonFiniteLossError(RuntimeError):
    """A training step's loss was NaN or infinite: the run stopped."""


class StopOnNonFiniteLoss(Callback):
    """Stops the run at the first training step whose loss is NaN or infinite.

    That step's update has already been applied, so the weights are no longer usable: the
    run ends without saving them, and the checkpoints of earlier epochs stay as they were.
    Under DDP every process stops at the same step (a process left alone would wait forever).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        finite = loss is None or bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        value = f"{loss.item()}" if not finite else "non-finite (in another process)"
        if last:
            way_out = (
                f"the last good checkpoint is {last}, whose weights are intact. Train again into a new output_dir"
                " with a lower optimizer.lr or a trainer.gradient_clip_val (model.from_checkpoint can start from"
                " that checkpoint)"
            )
        else:
            way_out = "no checkpoint was saved before it. Train again with a lower optimizer.lr or a trainer.gradient_clip_val"
        raise NonFiniteLossError(
            f"training stopped: the loss became {value} at epoch {trainer.current_epoch + 1}, batch {batch_idx}; {way_out}"
        )


class DataFingerprint(Callback):
    """Keeps the SHA-256 of every data file in the checkpoints, so that resuming on data that
    changed is refused by name (the model's statistics would disagree without saying why)."""

    def __init__(self, fingerprints: Dict[str, Dict[str, str]]):
        self.fingerprints = fingerprints

    def state_dict(self) -> Dict[str, Any]:
        return {"files": self.fingerprints}

    @classmethod
    def saved_in(cls, checkpoint: Dict[str, Any]) -> Optional[Dict[str, Dict[str, str]]]:
        """The fingerprints a checkpoint holds (None for one written before they were kept)."""
        state = checkpoint.get("callbacks", {}).get(cls.__qualname__)
        return None if state is None else state["files"]
