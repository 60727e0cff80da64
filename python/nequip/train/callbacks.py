"""Training callbacks of our own; the rest (checkpoints, early stopping, LR monitor) are Lightning's."""

import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch starts without on_train_epoch_start
        self._start = time.perf_counter()

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
        self.swapped = not self.swapped

    # the model holds the averages (and self.averages the training weights) while swapped
    swapped = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averages is not None and not self.swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.averages is not None and self.swapped:
            self._swap(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # swapped, not copied: Lightning may save last.ckpt after this (ModelCheckpoint's
        # on_train_end), which must still hold the training weights to resume from
        if self.averages is not None and not self.swapped:
            self._swap(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        if self.averages is None:
            return
        module_state = checkpoint["state_dict"]
        others = {name: self.averages[name].clone() if name in self.averages else value for name, value in module_state.items()}
        averages, weights = (module_state, others) if self.swapped else (others, module_state)
        checkpoint["state_dict"], checkpoint["current_model_state"] = averages, weights

    @torch.no_grad()
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        # the model was loaded from state_dict (the averages) before the callbacks
        if self.averages is None or "current_model_state" not in checkpoint:
            return
        for name in self.averages:
            self.averages[name].copy_(checkpoint["state_dict"][name])
        pl_module.load_state_dict(checkpoint["current_model_state"])


class SaveLastCheckpoint(Checkpoint):
    """Saves ``path`` (``last.ckpt``) at the end of every training epoch.

    Lightning's ModelCheckpoint saves its last checkpoint only with a validation, so with
    ``check_val_every_n_epoch`` above 1 a finished run's last.ckpt could lag the run by up to
    that many epochs. A Checkpoint callback runs after the others at an epoch's end (Lightning
    orders them last), so the EMA, early-stopping and best-checkpoint states it saves are the
    epoch's final ones.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


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
        saved = [c.path for c in trainer.checkpoint_callbacks if isinstance(c, SaveLastCheckpoint) and c.path.exists()]
        last = saved[0] if saved else ""
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


class TrainingStopped(RuntimeError):
    """SIGTERM stopped the run; ``resumable``: the checkpoint it saved has training left to do."""

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable


class StopOnSIGTERM(Callback):
    """Ends the run at the end of the training batch during which SIGTERM arrived, after saving
    ``last`` (what batch schedulers send at a time limit; the same command then resumes exactly).
    A SIGTERM in an epoch's last batch or in its validation ends the run with that epoch (whose
    end saves ``last``: SaveLastCheckpoint).

    Lightning's own handler ends such a run with exit status 0 and without a checkpoint, so a
    job chain would go on with an unfinished model: this one replaces it for the length of the
    training (from ``on_train_start``; Lightning's teardown puts back the handler it found, so
    before and after training SIGTERM ends the process as usual). Under DDP every process stops
    at the same batch, whichever received the signal.
    """

    def __init__(self, last: Path):
        self.last = Path(last)
        self.received = False
        self.stopped_after_epoch: Optional[int] = None

    def _receive(self, signum, frame) -> None:
        self.received = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a SIGTERM that reached Lightning's handler while the run was being set up counts too
        self.received = self.received or trainer.received_sigterm
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._receive)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # after an epoch's last batch come its validation and end: the run stops at that end
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        trainer.save_checkpoint(self.last, weights_only=False)
        raise TrainingStopped(
            f"stopped by SIGTERM in epoch {trainer.current_epoch + 1}, after batch {batch_idx + 1} of"
            f" {trainer.num_training_batches}; saved {self.last}",
            resumable=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """SIGTERM in an epoch's last batch or its validation: the epoch ends as usual (logs,
        last.ckpt, scheduler step), then the run stops (``stopped_after_epoch``; the caller raises)."""
        last_epoch = trainer.current_epoch + 1 >= trainer.max_epochs or trainer.should_stop
        if last_epoch or not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return  # a run that ends here anyway ends as usual
        trainer.should_stop = True
        self.stopped_after_epoch = trainer.current_epoch + 1

    def stopped(self) -> Optional[TrainingStopped]:
        """After ``fit``: the error that says SIGTERM stopped the run at an epoch's end, or None."""
        if self.stopped_after_epoch is None:
            return None
        return TrainingStopped(f"stopped by SIGTERM after epoch {self.stopped_after_epoch}; saved {self.last}", resumable=True)


class ResumedSchedulerSteps(Callback):
    """Takes the epoch-end steps of the learning-rate scheduler that Lightning skips on resume.

    Lightning does not step a ReduceLROnPlateau scheduler at the end of an epoch while it is
    restarting (the monitored value is not in the loops' state): a checkpoint saved at an
    epoch's end (validation end, before the step) resumes without that epoch's step, and one
    saved mid-epoch without the resumed epoch's. Either way the plateau count would lag the
    uninterrupted run's. This takes the first with the validation loss the checkpoint recorded
    (``saved_val_loss``), before the first resumed batch, and the second with the epoch's own
    as the next epoch starts: after the epoch's checkpoints, as Lightning's own step comes
    after them, so that every checkpoint of the resumed run equals the uninterrupted run's.
    """

    def __init__(self, saved_val_loss: Optional[float]):
        self.saved_val_loss = saved_val_loss
        self.pending: List[Tuple[Any, float]] = []  # (scheduler, monitored value) to step next epoch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved_val_loss is not None:
            for config in trainer.lr_scheduler_configs:
                config.scheduler.step(self.saved_val_loss)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fit_loop.restarting:
            return
        for config in trainer.lr_scheduler_configs:
            if config.interval == "epoch" and (trainer.current_epoch + 1) % config.frequency == 0:
                self.pending.append((config.scheduler, float(trainer.callback_metrics[config.monitor])))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for scheduler, value in self.pending:
            scheduler.step(value)
        self.pending = []


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
