"""Training with Lightning: configuration, data module, LightningModule, checkpoints, runs."""

from .checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint, model_from_checkpoint
from .config import ConfigError, TrainingConfig, load_config, validate_config
from .data import NequIPDataModule
from .lightning_module import NequIPLightningModule
from .training import train

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "ConfigError",
    "NequIPDataModule",
    "NequIPLightningModule",
    "TrainingConfig",
    "load_checkpoint",
    "load_config",
    "model_from_checkpoint",
    "train",
    "validate_config",
]
