"""A training run: configuration -> data, model, Lightning Trainer -> checkpoints and logs.

``train(config)`` is what ``nequip-train`` runs. In ``output_dir`` it writes ``config.yaml``
(the resolved configuration), ``best.ckpt`` (lowest validation loss), ``last.ckpt`` and
``logs/version_<n>/metrics.csv`` (one version per launch). When ``output_dir`` already holds
``last.ckpt`` the run resumes from it.
"""

import datetime
import importlib.util
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..data import keys
from ..model import NequIPModel, build_model
from ..utils.atomic_io import atomic_open
from .callbacks import EpochSummary, ExponentialMovingAverage
from .checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint, model_from_checkpoint, model_state_dict
from .config import MODEL_ARGUMENTS, ConfigError, TrainingConfig, config_to_dict
from .data import NequIPDataModule
from .lightning_module import NequIPLightningModule

MONITOR = "val_loss"


def load_source_model(config: TrainingConfig) -> Optional[NequIPModel]:
    """The model a fine-tuning run starts from, or None for a new model."""
    if config.model.from_checkpoint is not None:
        return model_from_checkpoint(config.model.from_checkpoint)
    if config.model.from_package is not None:
        from ..package import ModelFromPackage

        return ModelFromPackage(config.model.from_package)
    return None


def data_labels(config: TrainingConfig):
    """Labels every frame must carry: energies and forces, stresses when they are learned."""
    return (keys.TOTAL_ENERGY, keys.FORCES) + ((keys.STRESS,) if config.loss.stress > 0 else ())


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
    return datamodule


def resolve_model(config: TrainingConfig, source: Optional[NequIPModel]):
    """The model's full hyperparameters and the data module; statistics fill the gaps.

    ``avg_num_neighbors``, ``per_type_energy_shifts`` and ``per_type_energy_scales`` not given
    become the training data's average number of neighbours, least-squares per-type energies
    and force RMS. A fine-tuned model keeps its own, except shifts with ``refit_energy_shifts``.
    """
    if source is not None:
        model_config = dict(source.config)
        if config.data.type_names is not None and list(config.data.type_names) != model_config["type_names"]:
            raise ConfigError(
                f"data.type_names: {config.data.type_names} differs from the types of the model being"
                f" fine-tuned, {model_config['type_names']}; leave it out or list them in that order"
            )
    else:
        given = {name: getattr(config.model, name) for name in MODEL_ARGUMENTS}
        given["type_names"] = config.data.type_names
        # building it checks the hyperparameters before any data is read, and puts the
        # per-edge-type cutoffs into the form the neighbour lists need
        model_config = build_model(given).config
    datamodule = build_datamodule(config, model_config)

    if source is None or config.model.refit_energy_shifts:
        statistics = datamodule.statistics()
        if source is not None:
            model_config["per_type_energy_shifts"] = statistics["per_type_energy_shifts"]
        else:
            defaults = {
                "avg_num_neighbors": statistics["avg_num_neighbors"],
                "per_type_energy_shifts": statistics["per_type_energy_shifts"],
                "per_type_energy_scales": statistics["force_rms"],
            }
            for name, value in defaults.items():
                if getattr(config.model, name) is None:
                    given[name] = value
            model_config = build_model(given).config
    return model_config, datamodule


def build_trainer(config: TrainingConfig, extra_callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """The Lightning Trainer of a configuration: checkpoints, EMA, early stopping, CSV logs."""
    output_dir = Path(config.output_dir)
    checkpoints = ModelCheckpoint(
        dirpath=output_dir,
        filename="best",
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [checkpoints, EpochSummary(), LearningRateMonitor(logging_interval="epoch"), *extra_callbacks]
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
    # each launch, resumed ones included, logs to a new output_dir/logs/version_<n>/
    loggers = [CSVLogger(output_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(output_dir, name="logs", version=loggers[0].version, default_hp_metric=False))

    max_time = config.trainer.max_time
    if isinstance(max_time, float):
        max_time = datetime.timedelta(seconds=max_time)
    return L.Trainer(
        default_root_dir=output_dir,
        max_epochs=config.trainer.max_epochs,
        max_time=max_time,
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


@rank_zero_only
def write_resolved_config(config_dict: Dict[str, Any], model_config: Dict[str, Any], output_dir: Path) -> None:
    with atomic_open(output_dir / "config.yaml") as f:
        yaml.safe_dump({**config_dict, "resolved_model": model_config}, f, sort_keys=False)


def _check_resume_matches(checkpoint: Dict[str, Any], model_config: Dict[str, Any], path: Path) -> None:
    trained = checkpoint["hyper_parameters"]["model_config"]
    for name in model_config:
        if trained.get(name) != model_config[name]:
            raise ConfigError(
                f"model.{name}: {model_config[name]!r} differs from {trained.get(name)!r} in {path}, which this"
                " run would resume; use a new output_dir to train a different model"
            )


def train(config: TrainingConfig) -> L.Trainer:
    """Run (or resume) the training that ``config`` describes; returns the fitted Trainer."""
    output_dir = Path(config.output_dir)
    last = output_dir / "last.ckpt"
    resume_checkpoint = None
    if last.exists():
        try:
            resume_checkpoint = load_checkpoint(last)
        except CheckpointError as err:
            raise CheckpointError(f"cannot resume: {err}; delete it to start over") from err.__cause__

    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    source = load_source_model(config)
    model_config, datamodule = resolve_model(config, source)
    if resume_checkpoint is not None:
        _check_resume_matches(resume_checkpoint, model_config, last)

    config_dict = config_to_dict(config)
    module = NequIPLightningModule(model_config=model_config, config=config_dict)
    trainer = build_trainer(config)
    write_resolved_config(config_dict, model_config, output_dir)

    # output_dir holds config.yaml and the logs beside the checkpoints, on purpose
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if resume_checkpoint is not None:
        rank_zero_info(f"resuming from {last}, saved after epoch {resume_checkpoint['epoch'] + 1}")
    elif source is not None:
        weights = source.state_dict()
        # refitted shifts replace the source's; everything else starts where the source ended
        weights["per_type_energy_shifts"] = module.model.per_type_energy_shifts
        module.model.load_state_dict(weights)
        (start,) = trainer.validate(module, datamodule=datamodule, verbose=False)
        rank_zero_info(f"fine-tuning from validation loss {start[MONITOR]:.6g}")

    trainer.fit(module, datamodule=datamodule, ckpt_path=last if resume_checkpoint is not None else None)

    if datamodule.has_test_data and trainer.is_global_zero:
        evaluate_test_set(config, trainer, datamodule)
    return trainer


def evaluate_test_set(config: TrainingConfig, trainer: L.Trainer, datamodule: NequIPDataModule) -> Dict[str, float]:
    """Metrics of the best checkpoint on the test data, on one device, printed and returned."""
    best = trainer.checkpoint_callback.best_model_path
    module = NequIPLightningModule.load_from_checkpoint(best, map_location="cpu", weights_only=True)
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


__all__ = ["train", "build_trainer", "resolve_model", "load_source_model", "evaluate_test_set", "model_state_dict"]
