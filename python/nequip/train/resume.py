"""Resuming a run from ``output_dir/last.ckpt``: what may change, and where it starts again.

A resumed run continues the run its checkpoint holds: the optimizer, scheduler, EMA and
early-stopping states come back from the checkpoint, so a setting that shaped them cannot
change on the way without the record (``config.yaml``, the checkpoints) saying what did not
happen. Each key of the configuration is therefore either

- **applied** (:data:`APPLIED_ON_RESUME`): how long the run goes on, where it runs, and how it
  reports; the resumed run uses the new value and records it;
- **checked elsewhere**: the data files (by content, see :func:`check_same_data`: a file moved
  or renamed is fine) and the model section (by the resolved hyperparameters it makes, see
  :func:`check_same_model`);
- **refused** when it differs (everything else: data handling, loss, optimizer, scheduler, EMA,
  early stopping, precision, seed, validation frequency, gradient clipping), with one message
  naming the key, both values and the way out.

Every check here runs before anything is written. ``trainer.max_epochs`` (or
``trainer.max_time``) that leaves nothing to train is refused as well.
"""

import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import yaml

from .callbacks import DataFingerprint
from .config import ConfigError, TrainingConfig, config_to_dict, parse_max_time

# keys whose new value a resumed run uses (a key, or every key of a section)
APPLIED_ON_RESUME = (
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.val_batch_size",
    "metrics",
)
# keys compared by what they stand for, not as written
CHECKED_ELSEWHERE = (
    "output_dir",  # the directory that holds last.ckpt, however it is spelled
    "model",  # the resolved hyperparameters: check_same_model
    "data.file",  # the files' contents: check_same_data
    "data.train_file",
    "data.val_file",
    "data.test_file",
)


class DataChangedError(RuntimeError):
    """The data of a run to resume is not the data its checkpoint was trained on."""


def _covered(key: str, prefixes) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _differences(saved: Dict[str, Any], current: Dict[str, Any]) -> Iterator[Tuple[str, Any, Any]]:
    """(key, saved value, current value) of each key whose value differs, in schema order.

    A section present on one side only (``ema: null`` against ``ema: {decay: 0.99}``) is one
    difference of the section; keys the saved configuration lacks (written by an older nequip,
    before the key existed) are not differences.
    """
    for name, value in current.items():
        if name not in saved:
            continue
        before = saved[name]
        if isinstance(value, dict) and isinstance(before, dict) and value and before:
            for key, was, now in _differences(before, value):
                yield f"{name}.{key}", was, now
        elif before != value:
            yield name, before, value


def as_yaml(value: Any) -> str:
    """A value as it is written in a configuration file: null, 0.002, adamw, {decay: 0.9}."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _progress(checkpoint: Dict[str, Any]) -> Tuple[int, int, bool]:
    """(epochs whose end Lightning has processed, training batches done in the epoch after them,
    whether those were all of that epoch's batches), from the loops' state of a checkpoint."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loop.get("epoch_progress", {}).get("current")
    batches = loop.get("epoch_loop.batch_progress")
    if epochs is None or batches is None:  # not a Lightning training checkpoint of this version
        return int(checkpoint["epoch"]) + 1, 0, False
    if epochs["started"] == epochs["processed"]:  # saved at the end of an epoch (train epoch end)
        return int(epochs["processed"]), 0, False
    return int(epochs["processed"]), int(batches["current"]["processed"]), bool(batches["is_last_batch"])


def epochs_trained(checkpoint: Dict[str, Any]) -> int:
    """The epochs whose training batches a checkpoint has all done (what ``max_epochs`` counts).

    Lightning saves ``last.ckpt`` at the end of an epoch, or, when validation does not run every
    epoch, at the end of the validation after the epoch's last batch (the epoch counts as done:
    resuming finishes it without training); a run stopped by SIGTERM saves it mid-epoch.
    """
    processed, _, finished = _progress(checkpoint)
    return processed + int(finished)


def batches_into_epoch(checkpoint: Dict[str, Any]) -> int:
    """Training batches (per process) of an unfinished epoch that a checkpoint saved mid-epoch
    has done; 0 for a checkpoint saved after an epoch's last batch."""
    _, batches, finished = _progress(checkpoint)
    return 0 if finished else batches


def missed_scheduler_step(checkpoint: Dict[str, Any]) -> Optional[float]:
    """The validation loss of the learning-rate scheduler step that a checkpoint saved at the end
    of an epoch lacks (Lightning saves it before that step; see ResumedSchedulerSteps), or None."""
    schedulers = checkpoint.get("lr_schedulers") or []
    if not schedulers or batches_into_epoch(checkpoint):
        return None
    every = checkpoint["hyper_parameters"]["config"]["trainer"]["check_val_every_n_epoch"]
    if schedulers[0]["last_epoch"] >= epochs_trained(checkpoint) // every:
        return None
    (state,) = [v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")]
    score = state.get("current_score")
    return None if score is None else float(score)


def training_time(checkpoint: Dict[str, Any]) -> Optional[datetime.timedelta]:
    """The training time a checkpoint counts towards ``trainer.max_time`` (Lightning's Timer),
    or None when its run had no max_time."""
    timer = checkpoint.get("callbacks", {}).get("Timer")
    if timer is None:
        return None
    return datetime.timedelta(seconds=float(timer["time_elapsed"].get("train", 0.0)))


def check_resume_settings(checkpoint: Dict[str, Any], config: TrainingConfig, path: Path) -> None:
    """Refuse a resume whose settings differ from the checkpoint's where they cannot be applied,
    or that would train nothing (ConfigError naming the key)."""
    saved = checkpoint["hyper_parameters"]["config"]
    for key, was, now in _differences(saved, config_to_dict(config)):
        if _covered(key, APPLIED_ON_RESUME) or _covered(key, CHECKED_ELSEWHERE):
            continue
        raise ConfigError(
            f"{key}: {as_yaml(now)} differs from {as_yaml(was)} in {path}, which this run would resume; a resumed"
            " run keeps the settings it started with (docs/configuration.md lists those it may change). To resume,"
            f" give {as_yaml(was)}; to train on with {as_yaml(now)}, fine-tune from {path} (model.from_checkpoint)"
            " into a new output_dir"
        )

    done = epochs_trained(checkpoint)
    max_epochs = config.trainer.max_epochs
    if max_epochs <= done:
        trained = f"the {done} epoch{'s' if done != 1 else ''} {path} has trained"
        raise ConfigError(
            f"trainer.max_epochs: {max_epochs} is not more than {trained}, so resuming it would train nothing;"
            f" give trainer.max_epochs above {done} to train on, or a new output_dir to train afresh"
        )
    max_time = parse_max_time(config.trainer.max_time)
    spent = training_time(checkpoint)
    if max_time is not None and spent is not None and max_time <= spent:
        raise ConfigError(
            f"trainer.max_time: {as_yaml(config.trainer.max_time)} is not more than the {str(spent).split('.')[0]}"
            f" of training {path} has had (max_time counts every launch of a run), so resuming it would train"
            " nothing; raise trainer.max_time to train on, or use a new output_dir to train afresh"
        )


def check_same_model(checkpoint: Dict[str, Any], model_config: Dict[str, Any], path: Path) -> None:
    """Refuse to resume a model other than the checkpoint's (resolved hyperparameters compared).

    A record the checkpoint predates (e.g. ``closest_training_pair``) is not a difference.
    """
    trained = checkpoint["hyper_parameters"]["model_config"]
    for name, value in model_config.items():
        if name in trained and trained[name] != value:
            raise ConfigError(
                f"model.{name}: {as_yaml(value)} differs from {as_yaml(trained[name])} in {path}, which this run"
                " would resume; use a new output_dir to train a different model"
            )


def check_same_data(checkpoint: Dict[str, Any], fingerprints: Dict[str, Dict[str, str]], path: Path) -> None:
    """Refuse to resume on data other than the checkpoint's (the same bytes, wherever they are now)."""
    saved = DataFingerprint.saved_in(checkpoint)
    if saved is None:  # written before fingerprints were kept: the model check still applies
        return
    for key in sorted(saved.keys() | fingerprints.keys()):
        before, now = saved.get(key), fingerprints.get(key)
        if before is not None and now is not None and before["sha256"] == now["sha256"]:
            continue
        was = "not given" if before is None else f"{before['path']} (sha256 {before['sha256'][:12]})"
        is_now = "not given" if now is None else f"{now['path']} (sha256 {now['sha256'][:12]})"
        raise DataChangedError(
            f"cannot resume from {path}: the data changed since it was saved ({key} is now {is_now},"
            f" was {was}); restore that data to resume, or use a new output_dir to train on this data"
        )


__all__ = [
    "APPLIED_ON_RESUME",
    "DataChangedError",
    "as_yaml",
    "batches_into_epoch",
    "check_resume_settings",
    "check_same_data",
    "check_same_model",
    "epochs_trained",
    "missed_scheduler_step",
    "training_time",
]
