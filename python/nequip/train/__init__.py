"""Training with Lightning: configuration, data module, LightningModule, checkpoints, runs."""

from ..load import CheckpointError, load_checkpoint
from .checkpoint import AtomicCheckpointIO
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
    "train",
    "validate_config",
]
