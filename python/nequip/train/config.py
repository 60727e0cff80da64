"""The training configuration: a YAML file checked against dataclasses before anything runs.

Every section of the YAML file is one dataclass below; a field's type annotation is its
schema and its default is the value used when the key is left out (``REQUIRED`` marks keys
that must be given). ``validate_config(raw_dict)`` turns the parsed YAML into a
``TrainingConfig`` or raises ``ConfigError`` with one message that names the key by its full
path (``data.batch_size``), e.g.::

    data.batch_sise: unknown key (did you mean 'batch_size'?)
    optimizer.lr: expected a number, got str 'fast'
    output_dir: required key is missing

Command-line overrides ``key.sub=value`` are applied to the parsed YAML (values parsed as
YAML) before validation, so they are checked exactly like the file.
"""

import dataclasses
import difflib
import inspect
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import yaml

from ..model import NequIPModel

__all__ = [
    "ConfigError",
    "TrainingConfig",
    "DataConfig",
    "SplitConfig",
    "ModelConfig",
    "LossConfig",
    "MetricsConfig",
    "OptimizerConfig",
    "LRSchedulerConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "TrainerConfig",
    "load_config",
    "validate_config",
    "apply_overrides",
    "config_to_dict",
]


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def _required():
    return field(default=REQUIRED)


# ---------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------


@dataclass
class SplitConfig:
    """How one data file is divided: counts (integers) or fractions of the frames."""

    train: Union[int, float] = _required()
    val: Union[int, float] = _required()
    test: Union[int, float] = 0
    seed: int = 0


@dataclass
class DataConfig:
    """Where the frames come from and how species become model types.

    Either ``train_file`` and ``val_file`` (and optionally ``test_file``), or one ``file``
    with a ``split``.
    """

    type_names: Optional[List[str]] = None  # required unless fine-tuning (then: the model's)
    species_to_type: Optional[Dict[str, str]] = None
    train_file: Optional[str] = None
    val_file: Optional[str] = None
    test_file: Optional[str] = None
    file: Optional[str] = None
    split: Optional[SplitConfig] = None
    format: Optional[str] = None  # ASE format name; None: guessed from the file name
    energy_units_to_eV: float = 1.0
    length_units_to_A: float = 1.0
    batch_size: int = 4
    val_batch_size: Optional[int] = None  # None: batch_size
    num_workers: int = 0


# NequIPModel's own defaults, so that the two cannot drift apart
_MODEL_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(NequIPModel.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


@dataclass
class ModelConfig:
    """NequIPModel's arguments (same names and defaults), or a model to fine-tune.

    ``avg_num_neighbors``, ``per_type_energy_shifts`` and ``per_type_energy_scales`` left
    out (null) are computed from the training data (average number of neighbours,
    least-squares per-type energies, force RMS). ``type_names`` comes from
    ``data.type_names``.
    """

    r_max: Optional[float] = None  # required unless fine-tuning
    l_max: int = _MODEL_DEFAULTS["l_max"]
    parity: bool = _MODEL_DEFAULTS["parity"]
    num_layers: int = _MODEL_DEFAULTS["num_layers"]
    num_features: int = _MODEL_DEFAULTS["num_features"]
    num_bessels: int = _MODEL_DEFAULTS["num_bessels"]
    polynomial_cutoff_p: float = _MODEL_DEFAULTS["polynomial_cutoff_p"]
    radial_mlp_depth: int = _MODEL_DEFAULTS["radial_mlp_depth"]
    radial_mlp_width: int = _MODEL_DEFAULTS["radial_mlp_width"]
    avg_num_neighbors: Optional[float] = None
    per_type_energy_shifts: Optional[Union[float, List[float], Dict[str, float]]] = None
    per_type_energy_scales: Optional[Union[float, List[float], Dict[str, float]]] = None
    # {centre: r}, {centre: {neighbour: r}}, or num_types**2 numbers (row = centre type)
    per_edge_type_cutoff: Optional[Union[List[float], Dict[str, Union[float, Dict[str, float]]]]] = None
    model_dtype: Literal["float32", "float64"] = _MODEL_DEFAULTS["model_dtype"]
    # fine-tuning: start from a trained model instead of the hyperparameters above
    from_checkpoint: Optional[str] = None
    from_package: Optional[str] = None
    refit_energy_shifts: bool = False


# NequIPModel arguments that ModelConfig carries (everything but type_names)
MODEL_ARGUMENTS = tuple(
    name for name in inspect.signature(NequIPModel.__init__).parameters if name not in ("self", "type_names")
)
FINE_TUNING_KEYS = ("from_checkpoint", "from_package", "refit_energy_shifts")


@dataclass
class LossConfig:
    """Weighted sum of per-quantity losses; a coefficient of 0 leaves the quantity out."""

    energy_per_atom: float = 1.0
    forces: float = 1.0
    stress: float = 0.0
    function: Literal["mse", "huber"] = "mse"
    huber_delta: float = 0.01


@dataclass
class MetricsConfig:
    """MAE and RMSE of every learned quantity are always reported; these add more."""

    per_type_forces_mae: bool = True


@dataclass
class OptimizerConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 0.01
    weight_decay: float = 0.0
    amsgrad: bool = False


@dataclass
class LRSchedulerConfig:
    """ReduceLROnPlateau on the validation loss."""

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 1e-6


@dataclass
class EMAConfig:
    """Exponential moving average of the weights: used for validation and saved models."""

    decay: float = 0.99


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation loss has not improved by min_delta for patience epochs."""

    patience: int = 50
    min_delta: float = 0.0


@dataclass
class TrainerConfig:
    """Lightning Trainer options (same names and meanings)."""

    max_epochs: int = 100
    max_time: Optional[Union[str, float]] = None  # "DD:HH:MM:SS" or seconds
    accelerator: str = "auto"
    devices: Union[int, str, List[int]] = "auto"
    strategy: str = "auto"
    # the model computes in model.model_dtype; "64-true" also needs model_dtype float64
    precision: Literal["32-true", "64-true"] = "32-true"
    seed: int = 0
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    gradient_clip_val: Optional[float] = None
    enable_progress_bar: bool = True


@dataclass
class TrainingConfig:
    output_dir: str = _required()
    data: DataConfig = _required()
    model: ModelConfig = _required()
    loss: LossConfig = field(default_factory=LossConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: Optional[LRSchedulerConfig] = field(default_factory=LRSchedulerConfig)
    ema: Optional[EMAConfig] = field(default_factory=EMAConfig)
    early_stopping: Optional[EarlyStoppingConfig] = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def fine_tuning(self) -> bool:
        return self.model.from_checkpoint is not None or self.model.from_package is not None


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def _type_name(tp) -> str:
    """The schema type as a user reads it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true/false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    return str(tp)


def _describe(value) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def _shape(tp) -> str:
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "mapping"
    if origin is list:
        return "list"
    return "scalar"


def _check(value, tp, path: str):
    """Return ``value`` converted to ``tp`` (dataclasses built), or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Union:
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        # where only one member has the value's shape (mapping, list, scalar), its own message is more precise
        same_shape = [a for a in members if _shape(a) == _shape(type(value))]
        if len(same_shape) == 1 and (len(members) == 1 or _shape(type(value)) != "scalar"):
            return _check(value, same_shape[0], path)
        for member in members:
            try:
                return _check(value, member, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return _build_dataclass(tp, value, path)

    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        message = f"{path}: must be one of {', '.join(repr(a) for a in args)}, got {_describe(value)}"
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        raise ConfigError(message)

    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        return [_check(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]

    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        return {
            _check(k, args[0], f"{path} (key {k!r})"): _check(v, args[1], f"{path}.{k}")
            for k, v in value.items()
        }

    # scalars: YAML gives bool, int, float, str; bool is not a number here
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")


def _build_dataclass(cls, raw: dict, path: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{path}." if path else ""
    for key in raw:
        if key not in fields:
            message = f"{prefix}{key}: unknown key"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            else:
                message += f" (valid keys: {', '.join(fields)})"
            raise ConfigError(message)
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _check(raw[name], hints[name], f"{prefix}{name}")
        elif f.default is REQUIRED:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    return cls(**values)


def _check_consistency(config: TrainingConfig) -> None:
    """Rules that involve more than one key."""
    data, model = config.data, config.model
    if data.file is not None:
        if data.train_file is not None or data.val_file is not None or data.test_file is not None:
            raise ConfigError("data: give either 'file' (with 'split') or 'train_file' and 'val_file', not both")
        if data.split is None:
            raise ConfigError("data.split: required when data.file is given (counts or fractions of frames)")
        counts = (data.split.train, data.split.val, data.split.test)
        if any(c < 0 for c in counts):
            raise ConfigError("data.split: train, val and test must not be negative")
        kinds = {type(c) for c in counts if c != 0}
        if len(kinds) > 1:
            raise ConfigError("data.split: give train, val and test all as counts (integers) or all as fractions")
        if float in kinds and sum(counts) > 1.0 + 1e-9:
            raise ConfigError(f"data.split: fractions add up to {sum(counts):g}, more than 1")
    else:
        if data.split is not None:
            raise ConfigError("data.split: only used with data.file")
        for key in ("train_file", "val_file"):
            if getattr(data, key) is None:
                raise ConfigError(f"data.{key}: required key is missing (or give data.file with data.split)")
    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size: must be at least 1, got {data.batch_size}")

    if model.from_checkpoint is not None and model.from_package is not None:
        raise ConfigError("model: give at most one of 'from_checkpoint' and 'from_package'")
    if not config.fine_tuning:
        if model.refit_energy_shifts:
            raise ConfigError("model.refit_energy_shifts: only used with from_checkpoint or from_package")
        if model.r_max is None:
            raise ConfigError("model.r_max: required key is missing")
        if data.type_names is None:
            raise ConfigError("data.type_names: required key is missing")
    if data.type_names is not None and len(set(data.type_names)) != len(data.type_names):
        raise ConfigError(f"data.type_names: names must be distinct, got {data.type_names}")
    if data.species_to_type is not None and data.type_names is not None:
        for species, type_name in data.species_to_type.items():
            if type_name not in data.type_names:
                raise ConfigError(
                    f"data.species_to_type.{species}: {type_name!r} is not one of data.type_names {data.type_names}"
                )
    if max(config.loss.energy_per_atom, config.loss.forces, config.loss.stress) <= 0:
        raise ConfigError("loss: at least one of energy_per_atom, forces and stress must be positive")
    if config.trainer.precision == "64-true" and not config.fine_tuning and model.model_dtype != "float64":
        raise ConfigError("trainer.precision: '64-true' needs model.model_dtype 'float64'")
    if config.ema is not None and not 0.0 < config.ema.decay < 1.0:
        raise ConfigError(f"ema.decay: must be between 0 and 1 (exclusive), got {config.ema.decay}")


def validate_config(raw: Any) -> TrainingConfig:
    """Check a parsed YAML document against the schema; return the typed configuration."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping of sections, got {_describe(raw)}")
    raw_model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if "type_names" in raw_model:
        raise ConfigError("model.type_names: set the model's types in data.type_names")
    if raw_model.get("from_checkpoint") is not None or raw_model.get("from_package") is not None:
        defaults = ModelConfig()
        given = [k for k in MODEL_ARGUMENTS if k in raw_model and raw_model[k] != getattr(defaults, k)]
        if given:
            raise ConfigError(
                f"model.{given[0]}: a fine-tuned model keeps the hyperparameters of the model it"
                " starts from; remove this key"
            )
    config = _build_dataclass(TrainingConfig, raw, "")
    _check_consistency(config)
    return config


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.2 numbers: PyYAML (YAML 1.1) reads ``1e-3`` as a string, a classic trap for ``lr``."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_YAMLLoader)


def apply_overrides(raw: dict, overrides: List[str]) -> dict:
    """Apply ``key.sub=value`` strings (value parsed as YAML) to a parsed YAML document."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected key.sub=value")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {override!r}: value is not valid YAML ({e})") from None
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path, overrides: Optional[List[str]] = None) -> TrainingConfig:
    """Read, override and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty")
    if isinstance(raw, dict):
        apply_overrides(raw, overrides or [])
    return validate_config(raw)


def config_to_dict(config: TrainingConfig) -> dict:
    """Plain nested dict (YAML-safe) of a configuration; validate_config() reads it back."""
    return dataclasses.asdict(config)
