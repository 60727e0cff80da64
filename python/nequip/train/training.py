"""A training run: configuration -> data, model, Lightning Trainer -> checkpoints and logs.

``train(config)`` is what ``nequip-train`` runs. In ``output_dir`` it writes ``config.yaml``
(the resolved configuration), ``best.ckpt`` (lowest validation loss), ``last.ckpt`` and
``logs/version_<n>/metrics.csv`` (one version per launch). When ``output_dir`` already holds
``last.ckpt`` the run resumes from it.

For the length of a run ``output_dir`` holds ``nequip-train.lock`` (the process ID and host):
a second run into the same directory is refused, and the lock of a process that died is
taken over. Everything that can be checked without training (configuration, data, model,
the directory itself) is checked before anything is written.
"""

import contextlib
import errno
import fcntl
import importlib.util
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..data import keys
from ..model import NequIPModel, resolve_hyperparameters, with_resolved_zbl
from ..utils.atomic_io import WriteError, atomic_open, check_output_dir, remove_stale_temporaries
from ..utils.memory import keep_freed_memory
from ..utils.processes import is_running
from .callbacks import (
    DataFingerprint,
    EpochSummary,
    ExponentialMovingAverage,
    ResumedSchedulerSteps,
    SaveLastCheckpoint,
    StopOnNonFiniteLoss,
    StopOnSIGTERM,
    TrainingStopped,
)
from ..load import (
    OTHER_RELEASE_PACKAGE,
    CheckpointError,
    ModelFromCheckpoint,
    ModelFromPackage,
    load_checkpoint,
    model_state_dict,
)
from .checkpoint import AtomicCheckpointIO
from .config import RESOLVED_MODEL_KEY, ConfigError, TrainingConfig, config_to_dict, parse_max_time
from .data import NequIPDataModule, data_fingerprints
from .lightning_module import NequIPLightningModule
from .resume import (
    DataChangedError,
    batches_into_epoch,
    check_resume_settings,
    check_same_data,
    check_same_model,
    epochs_trained,
    missed_scheduler_step,
)

MONITOR = "val_loss"
LOCK_NAME = "nequip-train.lock"


class OutputDirInUseError(RuntimeError):
    """Another training run holds the output directory."""


def _lock_holder(path: Path) -> Optional[tuple]:
    """(pid, host) written in a lock file, or None when it holds none (yet)."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None



@contextlib.contextmanager
def output_dir_lock(output_dir: Path) -> Iterator[Path]:
    """Hold ``output_dir/nequip-train.lock`` for the length of a run.

    The file names this process (``<pid> <host>``) for the message of a refused second run.
    Exclusion is an flock on it, which the kernel drops when a process dies, so a lock left
    by a killed run is taken over (with a note); a lock naming a live process on this host is
    respected even without the flock.
    """
    path = output_dir / LOCK_NAME
    host = socket.gethostname()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(err.errno, err.strerror, str(output_dir)) from err

    def in_use(holder) -> OutputDirInUseError:
        who = "an unknown process" if holder is None else f"process {holder[0]} on {holder[1]}"
        return OutputDirInUseError(
            f"output_dir {output_dir} is in use by another training run ({who}, lock file {path});"
            f" wait for it to end or choose another output_dir. If no run is using it, delete {path}"
        )

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise WriteError(err.errno, err.strerror, str(path)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise in_use(_lock_holder(path)) from None
            raise WriteError(err.errno, err.strerror, str(path)) from err
        # the holder before us may have removed the file while we opened it: lock the file in place
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)

    holder = _lock_holder(path)
    if holder is not None and holder[0] != os.getpid():
        if holder[1] == host and is_running(holder[0]):
            os.close(fd)
            raise in_use(holder)
        rank_zero_info(
            f"note: {path} was left by process {holder[0]} on {holder[1]}, which is no longer running; taking it over"
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {host}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise WriteError(err.errno, err.strerror, str(path)) from err
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


class _CSVLogger(CSVLogger):
    """Lightning's CSV logger, with a failed write reported by file and OS error."""

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        try:
            super().log_hyperparams(params, *args, **kwargs)
        except OSError as err:
            path = os.path.join(self.log_dir, self.experiment.NAME_HPARAMS_FILE)
            raise WriteError(err.errno, err.strerror, path) from err

    @rank_zero_only
    def save(self) -> None:
        try:
            super().save()
        except OSError as err:
            raise WriteError(err.errno, err.strerror, self.experiment.metrics_file_path) from err

    @rank_zero_only
    def finalize(self, status: str) -> None:
        try:
            super().finalize(status)
        except OSError:
            if status != "failed":  # a failed run reports its own error, not this one's
                raise


def load_source_model(config: TrainingConfig) -> Optional[NequIPModel]:
    """The model a fine-tuning run starts from, or None for a new model."""
    # (the loaders refuse non-finite weights: a diverged run's first step would otherwise end
    # with an infinite loss blamed on the learning rate)
    if config.model.from_checkpoint is not None:
        return ModelFromCheckpoint(config.model.from_checkpoint)
    if config.model.from_package is not None:
        return ModelFromPackage(config.model.from_package)
    return None


def data_labels(config: TrainingConfig):
    """Labels read from the data: energies and forces, stresses when they are learned."""
    return (keys.TOTAL_ENERGY, keys.FORCES) + ((keys.STRESS,) if config.loss.stress > 0 else ())


# the loss coefficient of each label, and the label's name in messages
_LABEL_LOSS = {keys.TOTAL_ENERGY: ("energy_per_atom", "energy"), keys.FORCES: ("forces", "forces"),
               keys.STRESS: ("stress", "stress")}  # fmt: skip


def check_labels(config: TrainingConfig, datamodule: NequIPDataModule) -> None:
    """Say how many training frames carry each label; refuse a learned label that none has.

    A frame without a label adds no loss term for it (partly labelled data); but a label that
    no training frame has, with a non-zero loss coefficient, is a mistake.
    """
    counts = datamodule.label_counts("train")
    total = len(datamodule.datasets["train"])
    rank_zero_info(
        f"training frames with each label (of {total}): "
        + ", ".join(f"{_LABEL_LOSS[label][1]} {count}" for label, count in counts.items())
    )
    for label, count in counts.items():
        coefficient, name = _LABEL_LOSS[label]
        if count == 0 and getattr(config.loss, coefficient) > 0:
            raise ConfigError(
                f"loss.{coefficient}: no training frame has a {name} label (0 of {total}); add {name} labels to the "
                f"data or set loss.{coefficient}: 0"
            )
    unknown = sorted(set(config.loss.per_type_forces or {}) - set(datamodule.type_mapper.type_names))
    if unknown:
        raise ConfigError(
            f"loss.per_type_forces: unknown type {', '.join(map(repr, unknown))}; the model's types are "
            f"{datamodule.type_mapper.type_names}"
        )


def build_datamodule(config: TrainingConfig, model_config: Dict[str, Any]) -> NequIPDataModule:
    datamodule = NequIPDataModule(
        config.data,
        type_names=model_config["type_names"],
        r_max=model_config["r_max"],
        per_edge_type_cutoff=model_config["per_edge_type_cutoff"],
        labels=data_labels(config),
        seed=config.trainer.seed,
    )
    datamodule.setup("fit")
    check_labels(config, datamodule)
    return datamodule


def resolve_model(config: TrainingConfig, source: Optional[NequIPModel]):
    """The model's full hyperparameters and the data module; statistics fill the gaps.

    ``avg_num_neighbors``, ``per_type_energy_shifts``, ``per_type_energy_scales`` and
    ``closest_training_pair`` not given become the training data's average number of
    neighbors, least-squares per-type energies, force RMS and shortest edge. A fine-tuned model
    keeps its own, except shifts with ``refit_energy_shifts``, and records the closer of its
    parent's closest pair and the new data's.
    """
    if source is not None:
        model_config = dict(source.config)
        if OTHER_RELEASE_PACKAGE in model_config and config.model.refit_energy_shifts:
            raise ConfigError(
                "model.refit_energy_shifts: not available for a model of another NequIP release "
                f"({config.model.from_package}), whose energy shifts are its own modules'"
            )
        if config.data.type_names is not None and list(config.data.type_names) != model_config["type_names"]:
            raise ConfigError(
                f"data.type_names: {config.data.type_names} differs from the types of the model being"
                f" fine-tuned, {model_config['type_names']}; leave it out or list them in that order"
            )
    else:
        given = with_resolved_zbl({"type_names": config.data.type_names, **config.model.hyperparameters()})
        # resolved before any data is read: the per-edge-type cutoffs in the form the neighbor
        # lists need (validate_config has checked the values)
        model_config = resolve_hyperparameters(**given)
    datamodule = build_datamodule(config, model_config)

    statistics = datamodule.statistics()
    if source is not None:
        if config.model.refit_energy_shifts:
            if statistics["per_type_energy_shifts"] is None:
                raise ConfigError("model.refit_energy_shifts: no training frame has an energy label to fit them to")
            model_config["per_type_energy_shifts"] = statistics["per_type_energy_shifts"]
        # the parent's record may predate closest_training_pair (None)
        known = [d for d in (model_config.get("closest_training_pair"), statistics["closest_pair"]) if d is not None]
        model_config["closest_training_pair"] = min(known, default=None)
    else:
        defaults = {
            "avg_num_neighbors": statistics["avg_num_neighbors"],
            "per_type_energy_shifts": statistics["per_type_energy_shifts"],
            "per_type_energy_scales": statistics["force_rms"],
            "closest_training_pair": statistics["closest_pair"],
        }
        fitted_to = {"per_type_energy_shifts": "energy", "per_type_energy_scales": "forces"}
        for name, value in defaults.items():
            if getattr(config.model, name) is None:
                if value is None and name in fitted_to:  # no training frame has the label it is fitted to
                    raise ConfigError(
                        f"model.{name}: no training frame has a {fitted_to[name]} label to compute it from; give it"
                    )
                given[name] = value
        model_config = resolve_hyperparameters(**given)
    return model_config, datamodule


def build_trainer(config: TrainingConfig, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """The Lightning Trainer of a configuration: checkpoints, EMA, early stopping, CSV logs.

    The run stops at the first training step whose loss is not finite, and at the end of the
    training step during which SIGTERM arrived (saving last.ckpt).
    """
    output_dir = Path(config.output_dir)
    best = ModelCheckpoint(
        dirpath=output_dir,
        filename="best",
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [
        best,
        SaveLastCheckpoint(output_dir / "last.ckpt"),  # after best: it saves its state too
        StopOnNonFiniteLoss(),
        EpochSummary(),
        LearningRateMonitor(logging_interval="epoch"),
        *extra_callbacks,
    ]
    if config.trainer.enable_progress_bar:
        callbacks.append(TQDMProgressBar())
    if config.ema is not None:
        callbacks.append(ExponentialMovingAverage(decay=config.ema.decay))
    if config.early_stopping is not None:
        callbacks.append(
            EarlyStopping(
                monitor=MONITOR,
                mode="min",
                patience=config.early_stopping.patience,
                min_delta=config.early_stopping.min_delta,
            )
        )
    # last: the checkpoint it saves must hold every other callback's state after the batch (EMA's)
    callbacks.append(StopOnSIGTERM(output_dir / "last.ckpt"))
    # each launch, resumed ones included, logs to a new output_dir/logs/version_<n>/
    loggers = [_CSVLogger(output_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(output_dir, name="logs", version=loggers[0].version, default_hp_metric=False))

    options = dict(
        default_root_dir=output_dir,
        max_epochs=config.trainer.max_epochs,
        max_time=parse_max_time(config.trainer.max_time),
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        strategy=config.trainer.strategy,
        precision=config.trainer.precision,
        log_every_n_steps=config.trainer.log_every_n_steps,
        check_val_every_n_epoch=config.trainer.check_val_every_n_epoch,
        gradient_clip_val=config.trainer.gradient_clip_val,
        enable_progress_bar=config.trainer.enable_progress_bar,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        # forces are gradients: evaluation must be able to build a graph
        inference_mode=False,
        num_sanity_val_steps=0,
    )
    try:
        return L.Trainer(**options)
    except (MisconfigurationException, TypeError, ValueError) as err:
        # what Lightning refuses is the trainer section's accelerator, devices or strategy
        trainer = config.trainer
        given = f"accelerator {trainer.accelerator!r}, devices {trainer.devices!r}, strategy {trainer.strategy!r}"
        message = " ".join(str(err).split())
        raise ConfigError(f"trainer ({given}): {message}") from err


@rank_zero_only
def write_resolved_config(config_dict: Dict[str, Any], model_config: Dict[str, Any], output_dir: Path) -> None:
    with atomic_open(output_dir / "config.yaml") as f:
        yaml.safe_dump({**config_dict, RESOLVED_MODEL_KEY: model_config}, f, sort_keys=False)


def _remove_empty_dirs(directories: List[Path]) -> None:
    """Remove the directories (deepest first) that a run created and left empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def train(config: TrainingConfig) -> L.Trainer:
    """Run (or resume) the training that ``config`` describes; returns the fitted Trainer."""
    try:
        output_dir = check_output_dir(config.output_dir)
    except ValueError as err:
        raise ConfigError(f"output_dir: {err}") from None
    # a run refused before writing anything leaves no directory behind either
    created = [p for p in (output_dir, *output_dir.parents) if not p.exists()]
    try:
        # under DDP the launching process (rank 0) holds the lock for every rank
        with output_dir_lock(output_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
            if rank_zero_only.rank == 0:
                for path in remove_stale_temporaries(output_dir):
                    rank_zero_info(f"note: removed {path}, an unfinished write of an earlier run that was stopped")
            return _train(config, output_dir)
    finally:
        _remove_empty_dirs(created)


def _train(config: TrainingConfig, output_dir: Path) -> L.Trainer:
    last = output_dir / "last.ckpt"
    resume_checkpoint = None
    if last.exists():
        try:
            resume_checkpoint = load_checkpoint(last)
        except CheckpointError as err:
            raise CheckpointError(f"cannot resume: {err}; delete it to start over") from err.__cause__
        # the settings first: they need no data, and a refused resume writes nothing
        check_resume_settings(resume_checkpoint, config, last)

    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    keep_freed_memory()
    source = load_source_model(config)
    model_config, datamodule = resolve_model(config, source)
    fingerprints = data_fingerprints(config.data)
    if resume_checkpoint is not None:
        check_same_data(resume_checkpoint, fingerprints, last)
        check_same_model(resume_checkpoint, model_config, last)

    config_dict = config_to_dict(config)
    module = NequIPLightningModule(model_config=model_config, config=config_dict)
    extra_callbacks = [DataFingerprint(fingerprints)]
    if resume_checkpoint is not None:
        extra_callbacks.append(ResumedSchedulerSteps(missed_scheduler_step(resume_checkpoint)))
    trainer = build_trainer(config, extra_callbacks=extra_callbacks)
    write_resolved_config(config_dict, model_config, output_dir)

    # output_dir holds config.yaml and the logs beside the checkpoints, on purpose
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if resume_checkpoint is not None:
        done, into_epoch = epochs_trained(resume_checkpoint), batches_into_epoch(resume_checkpoint)
        where = f"in epoch {done + 1} after batch {into_epoch}" if into_epoch else f"after epoch {done}"
        rank_zero_info(f"resuming from {last}, saved {where}")
        # the training loader leaves out the batches done (SkippingDataLoader), which Lightning cannot see
        datamodule.resume_after_batches = into_epoch
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    elif source is not None:
        weights = source.state_dict()
        # refitted shifts replace the source's; everything else starts where the source ended
        if "per_type_energy_shifts" in weights:  # (a model of the other NequIP release keeps its own)
            weights["per_type_energy_shifts"] = module.model.per_type_energy_shifts
        module.model.load_state_dict(weights)
        (start,) = trainer.validate(module, datamodule=datamodule, verbose=False)
        rank_zero_info(f"fine-tuning from validation loss {start[MONITOR]:.6g}")

    trainer.fit(module, datamodule=datamodule, ckpt_path=last if resume_checkpoint is not None else None)

    stop = next(c for c in trainer.callbacks if isinstance(c, StopOnSIGTERM))
    if stop.stopped() is not None:
        raise stop.stopped()
    if stop.received and datamodule.has_test_data:  # SIGTERM in the last validation: training is done
        raise TrainingStopped(
            f"stopped by SIGTERM after the last epoch: {last} holds the finished run, but the test data were not"
            f" evaluated (nequip-test {trainer.checkpoint_callback.best_model_path or last} evaluates them)",
            resumable=False,
        )
    if datamodule.has_test_data and trainer.is_global_zero:
        if trainer.checkpoint_callback.best_model_path:
            evaluate_test_set(config, trainer, datamodule)
        else:  # e.g. trainer.max_time ran out before the first validation
            rank_zero_info("note: no validation ran, so there is no best.ckpt to evaluate on the test data")
    return trainer


def evaluate_test_set(config: TrainingConfig, trainer: L.Trainer, datamodule: NequIPDataModule) -> Dict[str, float]:
    """Metrics of the best checkpoint on the test data, on one device, printed and returned."""
    best = trainer.checkpoint_callback.best_model_path
    module = NequIPLightningModule.from_checkpoint(best)
    tester = L.Trainer(
        accelerator=config.trainer.accelerator,
        devices=1,
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = tester.test(module, datamodule=datamodule, verbose=True)
    return metrics


__all__ = [
    "DataChangedError",
    "OutputDirInUseError",
    "TrainingStopped",
    "train",
    "build_trainer",
    "resolve_model",
    "load_source_model",
    "evaluate_test_set",
    "model_state_dict",
    "output_dir_lock",
]
