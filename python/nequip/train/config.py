"""The training configuration: a YAML file checked against pydantic models before anything runs.

Every section of the YAML file is one pydantic model below; a field's type annotation and
bounds are its schema and its default is the value used when the key is left out.
``validate_config(raw_dict)`` turns the parsed YAML into a ``TrainingConfig`` or raises
``ConfigError`` with one message that names the key by its full path, e.g.::

    data.batch_sise: unknown key (did you mean 'batch_size'?)
    optimizer.lr: expected a number, got str 'fast'
    optimizer.lr: must be greater than 0, got -1
    output_dir: required key is missing

Command-line overrides ``key.sub=value`` are applied to the parsed YAML (values parsed as
YAML) before validation, so they are checked exactly like the file. ``json_schema()`` is the
JSON Schema of the file (``nequip-train --schema``), for editors.
"""

import datetime
import difflib
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator
from pydantic.fields import FieldInfo

from ..data import ase_format_problem
from ..model import MODEL_ARGUMENTS, HyperparameterError, NequIPModel, resolve_hyperparameters, with_resolved_zbl

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
    "json_schema",
    "parse_max_time",
]


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


class _Section(BaseModel):
    # strict: YAML's types are taken as they are (no "3" -> 3, no true -> 1); an int is
    # still accepted where a number is expected
    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------


class SplitConfig(_Section):
    """How one data file is divided: counts (integers) or fractions of the frames."""

    train: Union[int, float]
    val: Union[int, float]
    test: Union[int, float] = 0
    seed: int = 0


def _check_weights(weights: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    """Loss weights by name: finite and >= 0."""
    for name, weight in (weights or {}).items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"the weight of {name!r} must be a finite number >= 0, got {weight!r}")
    return weights


class DataConfig(_Section):
    """Where the frames come from and how species become model types.

    Either ``train_file`` and ``val_file`` (and optionally ``test_file``), or one ``file``
    with a ``split``.
    """

    type_names: Optional[List[str]] = Field(
        None, description="the model's type names, in type-index order; required unless fine-tuning (then: the model's)"
    )
    species_to_type: Optional[Dict[str, str]] = Field(None, description="chemical symbol -> type name")
    train_file: Optional[str] = None
    val_file: Optional[str] = None
    test_file: Optional[str] = None
    file: Optional[str] = Field(None, description="one file of structures, divided by split")
    split: Optional[SplitConfig] = None
    format: Optional[str] = Field(None, description="ASE format name; left out: guessed from the file name")
    energy_units_to_eV: float = Field(1.0, gt=0, description="factor from the data's energy unit to eV")
    length_units_to_A: float = Field(1.0, gt=0, description="factor from the data's length unit to Å")
    batch_size: int = Field(4, ge=1)
    val_batch_size: Optional[int] = Field(None, ge=1, description="left out: batch_size")
    num_workers: int = Field(0, ge=0)
    # loss weights read from the frames (loss.per_type_forces weighs by type)
    frame_weight_key: Optional[str] = Field(
        None, description="the key of each frame's info (extxyz: its comment line) holding its loss weight (>= 0)"
    )
    config_type_weights: Optional[Dict[str, float]] = Field(
        None, description="loss weight of the frames of each config_type (info['config_type']); others weigh 1"
    )
    force_weight_key: Optional[str] = Field(
        None, description="the per-atom array of each frame (extxyz: a column) holding its atoms' force weights (>= 0)"
    )

    @field_validator("config_type_weights")
    @classmethod
    def _weights_not_negative(cls, value):
        return _check_weights(value)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: Optional[str]) -> Optional[str]:
        problem = None if value is None else ase_format_problem(value)
        if problem is not None:
            raise ValueError(f"{problem}, or leave data.format out to guess it from the file name")
        return value


# NequIPModel's own defaults, so that the two cannot drift apart
_MODEL_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(NequIPModel.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}

PerTypeValues = Optional[Union[float, List[float], Dict[str, float]]]


class ZBLConfig(_Section):
    """ZBL repulsion's options (nequip.model.zbl_options); each left out has its default."""

    atomic_numbers: Optional[Dict[str, int]] = Field(
        None, description="type name -> atomic number; left out: the type names are chemical symbols"
    )
    inner_radius: Optional[Union[float, List[float]]] = Field(
        None, description="Å, below it the full ZBL energy: one number, or num_types**2 (row = center type); "
        "left out: half the pair's covalent radii"
    )
    outer_radius: Optional[Union[float, List[float]]] = Field(
        None, description="Å, beyond it none, at most the pair's cutoff: one number, or num_types**2; left out: "
        "0.75 of the pair's covalent radii (at most its cutoff)"
    )


class ModelConfig(_Section):
    """NequIPModel's arguments (same names and defaults), or a model to fine-tune.

    ``avg_num_neighbors``, ``per_type_energy_shifts``, ``per_type_energy_scales`` and
    ``closest_training_pair`` left out (null) are computed from the training data (average
    number of neighbors, least-squares per-type energies, force RMS, shortest edge). ``type_names`` comes from
    ``data.type_names``. The schema gives each argument's type; its values are checked by
    NequIPModel's own check (``resolve_hyperparameters``), whose messages are reported here.
    """

    r_max: Optional[float] = Field(None, description="cutoff radius, Å; required unless fine-tuning")
    l_max: int = _MODEL_DEFAULTS["l_max"]
    parity: bool = _MODEL_DEFAULTS["parity"]
    num_layers: int = _MODEL_DEFAULTS["num_layers"]
    num_features: int = _MODEL_DEFAULTS["num_features"]
    num_bessels: int = _MODEL_DEFAULTS["num_bessels"]
    polynomial_cutoff_p: float = _MODEL_DEFAULTS["polynomial_cutoff_p"]
    radial_mlp_depth: int = _MODEL_DEFAULTS["radial_mlp_depth"]
    radial_mlp_width: int = _MODEL_DEFAULTS["radial_mlp_width"]
    avg_num_neighbors: Optional[float] = Field(None, description="left out: from the training data")
    per_type_energy_shifts: PerTypeValues = Field(None, description="left out: least squares of the energies")
    per_type_energy_scales: PerTypeValues = Field(None, description="left out: the force RMS")
    per_edge_type_cutoff: Optional[Union[List[float], Dict[str, Union[float, Dict[str, float]]]]] = Field(
        None, description="{center: r}, {center: {neighbor: r}}, or num_types**2 numbers (row = center type)"
    )
    model_dtype: Literal["float32", "float64"] = _MODEL_DEFAULTS["model_dtype"]
    zbl: Optional[ZBLConfig] = Field(
        None, description="add ZBL screened nuclear repulsion to the learned energy: true, or a mapping of its options"
    )
    closest_training_pair: Optional[float] = Field(
        None, description="Å, a record for the runtime's close-pair warning; left out: from the training data"
    )
    # fine-tuning: start from a trained model instead of the hyperparameters above
    from_checkpoint: Optional[str] = Field(None, description="fine-tune the model of this training checkpoint")
    from_package: Optional[str] = Field(None, description="fine-tune the model of this package")
    refit_energy_shifts: bool = Field(False, description="fine-tuning: refit the energy shifts on the new data")

    @field_validator("zbl", mode="before")
    @classmethod
    def _zbl_true_is_the_defaults(cls, value):
        return {} if value is True else None if value is False else value

    @field_validator("zbl")
    @classmethod
    def _zbl_as_mapping(cls, value):
        # what build_model takes: the options given, as a plain mapping
        return value.model_dump(exclude_none=True) if isinstance(value, ZBLConfig) else value

    @field_serializer("zbl")
    def _zbl_as_given(self, value):
        return value

    def hyperparameters(self) -> Dict[str, Any]:
        """The NequIPModel arguments this section gives (all but ``type_names``)."""
        return {name: getattr(self, name) for name in MODEL_ARGUMENTS if name != "type_names"}


class LossConfig(_Section):
    """Weighted sum of per-quantity losses; a coefficient of 0 leaves the quantity out."""

    energy_per_atom: float = Field(1.0, ge=0)
    forces: float = Field(1.0, ge=0)
    stress: float = Field(0.0, ge=0)
    function: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0)
    per_type_forces: Optional[Dict[str, float]] = Field(
        None, description="weight of the forces on the atoms of each type (type name -> weight >= 0); others weigh 1"
    )

    @field_validator("per_type_forces")
    @classmethod
    def _weights_not_negative(cls, value):
        return _check_weights(value)


class MetricsConfig(_Section):
    """MAE and RMSE of every learned quantity are always reported; these add more."""

    per_type_forces_mae: bool = True


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    amsgrad: bool = False


class LRSchedulerConfig(_Section):
    """ReduceLROnPlateau on the validation loss."""

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    min_lr: float = Field(1e-6, ge=0)


class EMAConfig(_Section):
    """Exponential moving average of the weights: used for validation and saved models."""

    decay: float = Field(0.99, gt=0, lt=1)


class EarlyStoppingConfig(_Section):
    """Stop when the validation loss has not improved by min_delta for patience epochs."""

    patience: int = Field(50, ge=0)
    min_delta: float = Field(0.0, ge=0)


_MAX_TIME_FORMAT = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")


def parse_max_time(value: Union[None, str, float]) -> Optional[datetime.timedelta]:
    """``trainer.max_time`` ("DD:HH:MM:SS", as Lightning reads it, or seconds) as a duration."""
    if value is None:
        return None
    if isinstance(value, str):
        match = _MAX_TIME_FORMAT.match(value.strip())
        if match is None:
            raise ValueError(
                f'expected "DD:HH:MM:SS" (e.g. "00:12:00:00" for 12 hours) or a number of seconds, got {value!r}'
            )
        days, hours, minutes, seconds = (int(part) for part in match.groups())
        duration = datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        duration = datetime.timedelta(seconds=value)
    if duration <= datetime.timedelta(0):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return duration


class TrainerConfig(_Section):
    """Lightning Trainer options (same names and meanings)."""

    max_epochs: int = Field(100, ge=1)
    max_time: Optional[Union[str, float]] = Field(None, description='"DD:HH:MM:SS" or a number of seconds')
    accelerator: str = "auto"
    devices: Union[int, str, List[int]] = "auto"
    strategy: str = "auto"
    precision: Literal["32-true", "64-true"] = Field(
        "32-true", description="the model computes in model.model_dtype; '64-true' also needs model_dtype float64"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy's range of seeds")
    log_every_n_steps: int = Field(50, ge=1)
    check_val_every_n_epoch: int = Field(1, ge=1)
    gradient_clip_val: Optional[float] = Field(None, gt=0)
    enable_progress_bar: bool = True

    @field_validator("max_time")
    @classmethod
    def _readable_max_time(cls, value):
        parse_max_time(value)
        return value


class TrainingConfig(_Section):
    model_config = ConfigDict(
        json_schema_extra={"title": "nequip-train configuration"}, extra="forbid", strict=True
    )

    output_dir: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    lr_scheduler: Optional[LRSchedulerConfig] = Field(default_factory=LRSchedulerConfig)
    ema: Optional[EMAConfig] = Field(default_factory=EMAConfig)
    early_stopping: Optional[EarlyStoppingConfig] = None
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @property
    def fine_tuning(self) -> bool:
        return self.model.from_checkpoint is not None or self.model.from_package is not None


def json_schema() -> Dict[str, Any]:
    """The JSON Schema of a configuration file (what editors complete and check keys with)."""
    return TrainingConfig.model_json_schema()


# ---------------------------------------------------------------------------------------
# pydantic's errors as one line each, named by the key's full path
# ---------------------------------------------------------------------------------------


def _strip_optional(tp):
    if typing.get_origin(tp) is Union:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _is_union(tp) -> bool:
    return typing.get_origin(tp) is Union


def _type_name(tp) -> str:
    """The schema type as a user reads it."""
    tp = _strip_optional(tp)
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
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return ", ".join(names[:-1]) + " or " + names[-1]
    return str(tp)


def _describe(value) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def _union_member(union, tag: str):
    """The member of ``union`` that pydantic's loc ``tag`` (e.g. 'list[float]', 'float') names."""
    members = [a for a in typing.get_args(union) if a is not type(None)]
    for member in members:
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            name = member.__name__
        elif origin is not None:
            name = origin.__name__
        else:
            name = getattr(member, "__name__", str(member))
        if tag == name or tag.startswith(name + "["):
            return member
    return None


class _Located(typing.NamedTuple):
    path: str  # the key's full path as a user writes it (data.split.val, data.type_names[1])
    annotation: Any  # the expected type there
    field: Optional[FieldInfo]  # the field whose value it is (bounds, for range messages)


def _locate(loc) -> _Located:
    """Follow pydantic's error location through the schema: union tags are not keys."""
    path = ""
    annotation: Any = TrainingConfig
    field = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        annotation = _strip_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            path = f"{path}.{part}" if path else str(part)
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else Any
        elif _is_union(annotation):
            member = _union_member(annotation, str(part))
            if member is None:  # not a tag: the union as a whole
                parts.insert(0, part)
                return _Located(path, annotation, field)
            if not parts:
                return _Located(path, annotation, field)
            annotation = member
        elif typing.get_origin(annotation) is list:
            path = f"{path}[{part}]"
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            path = f"{path}.{part}"
            annotation = typing.get_args(annotation)[1]
        else:
            path = f"{path}.{part}" if path else str(part)
            annotation = Any
    return _Located(path, annotation, field)


# Field(gt=...) and the like, as a user reads them
_BOUND_WORDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}


def _bounds(field: Optional[FieldInfo]) -> str:
    """A field's range as a user reads it: 'greater than 0', 'between 0 and 1 (exclusive)'."""
    bounds = {}
    for constraint in field.metadata if field is not None else []:
        for name in _BOUND_WORDS:
            if isinstance(constraint, annotated_types.BaseMetadata) and hasattr(constraint, name):
                bounds[name] = getattr(constraint, name)
    if bounds.keys() == {"gt", "lt"}:
        return f"between {bounds['gt']} and {bounds['lt']} (exclusive)"
    return " and ".join(f"{_BOUND_WORDS[name]} {value}" for name, value in bounds.items())


def _message(error: Dict[str, Any]) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        located = _locate(error["loc"][:-1]) if len(error["loc"]) > 1 else None
        section = TrainingConfig if located is None else _strip_optional(located.annotation)
        key = str(error["loc"][-1])
        path = key if located is None else f"{located.path}.{key}"
        fields = list(section.model_fields)
        message = f"{path}: unknown key"
        close = difflib.get_close_matches(key, fields, n=1)
        if close:
            return f"{message} (did you mean {close[0]!r}?)"
        return f"{message} (valid keys: {', '.join(fields)})"

    located = _locate(error["loc"])
    if kind == "missing":
        return f"{located.path}: required key is missing"
    if kind == "literal_error":
        options = typing.get_args(_strip_optional(located.annotation))
        message = f"{located.path}: must be one of {', '.join(repr(a) for a in options)}, got {_describe(value)}"
        close = difflib.get_close_matches(str(value), [str(a) for a in options], n=1)
        return f"{message} (did you mean {close[0]!r}?)" if close else message
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{located.path}: must be {_bounds(located.field)}, got {value!r}"
    if kind == "value_error":
        return f"{located.path}: {error['ctx']['error']}"
    # a value of the wrong type (pydantic's *_type and *_parsing errors)
    return f"{located.path}: expected {_type_name(located.annotation)}, got {_describe(value)}"


def _first_problem(err: ValidationError) -> str:
    """The message of the first key in error; of a union's members, the one that got furthest."""
    errors = err.errors(include_url=False)
    if errors[0]["type"] == "extra_forbidden":
        return _message(errors[0])
    first = _locate(errors[0]["loc"]).path

    def within_first(error) -> bool:
        path = _locate(error["loc"]).path
        return error["type"] != "extra_forbidden" and (path == first or path.startswith((f"{first}.", f"{first}[")))

    return _message(max(filter(within_first, errors), key=lambda e: len(_locate(e["loc"]).path)))


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


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

    if model.from_checkpoint is not None and model.from_package is not None:
        raise ConfigError("model: give at most one of 'from_checkpoint' and 'from_package'")
    if config.fine_tuning:
        # given: written in the file (or an override), whatever its value
        given = [name for name in MODEL_ARGUMENTS if name in model.model_fields_set]
        if given:
            raise ConfigError(
                f"model.{given[0]}: a fine-tuned model keeps the hyperparameters of the model it starts from;"
                " remove this key"
            )
    else:
        if model.refit_energy_shifts:
            raise ConfigError("model.refit_energy_shifts: only used with from_checkpoint or from_package")
        if model.r_max is None:
            raise ConfigError("model.r_max: required key is missing")
        if data.type_names is None:
            raise ConfigError("data.type_names: required key is missing")
        try:  # the model's own check of every value, with its messages
            resolve_hyperparameters(**with_resolved_zbl(dict(type_names=data.type_names, **model.hyperparameters())))
        except HyperparameterError as err:
            raise ConfigError(f"{'data' if err.key == 'type_names' else 'model'}.{err}") from None
    if data.species_to_type is not None and data.type_names is not None:
        for species, type_name in data.species_to_type.items():
            if type_name not in data.type_names:
                raise ConfigError(
                    f"data.species_to_type.{species}: {type_name!r} is not one of data.type_names {data.type_names}"
                )
    if max(config.loss.energy_per_atom, config.loss.forces, config.loss.stress) <= 0:
        raise ConfigError("loss: at least one of energy_per_atom, forces and stress must be positive")
    if config.trainer.check_val_every_n_epoch > config.trainer.max_epochs:
        raise ConfigError(
            f"trainer.check_val_every_n_epoch: {config.trainer.check_val_every_n_epoch} is more than"
            f" trainer.max_epochs {config.trainer.max_epochs}, so no validation would run and no best.ckpt"
            " be saved; lower it or raise max_epochs"
        )
    if config.trainer.precision == "64-true" and not config.fine_tuning and model.model_dtype != "float64":
        raise ConfigError("trainer.precision: '64-true' needs model.model_dtype 'float64'")


# The resolved model's hyperparameters in a run's config.yaml (not an input section)
RESOLVED_MODEL_KEY = "resolved_model"


def validate_config(raw: Any) -> TrainingConfig:
    """Check a parsed YAML document against the schema; return the typed configuration."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping of sections, got {_describe(raw)}")
    # the record a run writes beside its sections (write_resolved_config): a run's config.yaml is
    # read back as it was written (resuming, or training again from it), and its model is
    # resolved again from the sections
    raw = {key: value for key, value in raw.items() if key != RESOLVED_MODEL_KEY}
    raw_model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if "type_names" in raw_model:
        raise ConfigError("model.type_names: set the model's types in data.type_names")
    try:
        config = TrainingConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_first_problem(err)) from None
    _check_consistency(config)
    return config


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.2 numbers (PyYAML, YAML 1.1, reads ``1e-3`` as a string, a classic trap for
    ``lr``), and no duplicate keys (a second ``data:`` section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen}); give each key once", key_node.start_mark
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


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


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: the problem and where it is."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None:
        return str(err).replace("\n", " ")
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def apply_overrides(raw: dict, overrides: List[str]) -> dict:
    """Apply ``key.sub=value`` strings (value parsed as YAML) to a parsed YAML document."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected key.sub=value")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {override!r}: value is not valid YAML ({_yaml_problem(e)})") from None
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
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not a text file (not UTF-8); give the YAML configuration file (see examples/minimal.yaml)"
        ) from None
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty")
    if isinstance(raw, dict):
        apply_overrides(raw, overrides or [])
    return validate_config(raw)


def config_to_dict(config: TrainingConfig) -> dict:
    """Plain nested dict (YAML-safe) of a configuration; validate_config() reads it back.

    A fine-tuning run's model section holds no hyperparameters: the model's are those of the
    model it starts from (``resolved_model`` in config.yaml), not the schema's defaults.
    """
    values = config.model_dump()
    if config.fine_tuning:
        values["model"] = {k: v for k, v in values["model"].items() if k not in MODEL_ARGUMENTS}
    return values
