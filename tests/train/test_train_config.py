"""The training configuration is checked before anything runs, one exact message per mistake."""

import copy
import datetime
import inspect
import json
import zipfile

import pytest
import yaml

from nequip.model import MODEL_ARGUMENTS, HyperparameterError, NequIPModel, build_model
from nequip.scripts.train import main as nequip_train
from nequip.train.config import (
    ConfigError,
    ModelConfig,
    TrainerConfig,
    TrainingConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_max_time,
    validate_config,
)

from .helpers import REPO

VALID = {
    "output_dir": "out",
    "data": {"type_names": ["Cu", "Au"], "file": "emt.xyz", "split": {"train": 0.8, "val": 0.2}},
    "model": {"r_max": 4.0, "num_layers": 2},
}


def with_changes(**sections):
    """VALID with some sections' keys replaced (None deletes a key)."""
    raw = copy.deepcopy(VALID)
    for section, changes in sections.items():
        if not isinstance(changes, dict):
            raw[section] = changes
            continue
        raw.setdefault(section, {})
        for key, value in changes.items():
            if value is None:
                raw[section].pop(key, None)
            else:
                raw[section][key] = value
    return raw


def test_valid_config_gets_defaults():
    config = validate_config(VALID)
    assert isinstance(config, TrainingConfig)
    assert config.data.batch_size == 4
    assert config.data.split.train == 0.8 and config.data.split.seed == 0
    assert config.model.num_layers == 2
    assert config.optimizer.name == "adam"
    assert config.ema.decay == 0.99
    assert config.early_stopping is None


@pytest.mark.parametrize(
    "raw, message",
    [
        (with_changes(data={"batch_sise": 4}), "data.batch_sise: unknown key (did you mean 'batch_size'?)"),
        (with_changes(trainr={"max_epochs": 3}), "trainr: unknown key (did you mean 'trainer'?)"),
        (with_changes(model={"num_layer": 3}), "model.num_layer: unknown key (did you mean 'num_layers'?)"),
        (with_changes(data={"split": {"train": 8, "val": 2, "sede": 1}}), "data.split.sede: unknown key (did you mean 'seed'?)"),
        (with_changes(optimizer={"lr": "fast"}), "optimizer.lr: expected a number, got str 'fast'"),
        (with_changes(trainer={"max_epochs": True}), "trainer.max_epochs: expected an integer, got bool True"),
        (with_changes(data={"type_names": ["Cu", 3]}), "data.type_names[1]: expected a string, got int 3"),
        (
            with_changes(model={"per_type_energy_shifts": {"Cu": "low"}}),
            "model.per_type_energy_shifts.Cu: expected a number, got str 'low'",
        ),
        (with_changes(loss={"function": "mae"}), "loss.function: must be one of 'mse', 'huber', got str 'mae' (did you mean 'mse'?)"),
        (with_changes(data="emt.xyz"), "data: expected a mapping, got str 'emt.xyz'"),
        ({k: v for k, v in VALID.items() if k != "output_dir"}, "output_dir: required key is missing"),
        (with_changes(data={"split": {"train": 8}}), "data.split.val: required key is missing"),
        (with_changes(model={"r_max": None}), "model.r_max: required key is missing"),
        (with_changes(data={"type_names": None}), "data.type_names: required key is missing"),
        (
            with_changes(data={"train_file": "train.xyz"}),
            "data: give either 'file' (with 'split') or 'train_file' and 'val_file', not both",
        ),
        (
            with_changes(data={"file": None, "split": None, "train_file": "train.xyz"}),
            "data.val_file: required key is missing (or give data.file with data.split)",
        ),
        (
            with_changes(data={"split": {"train": 10, "val": 0.2}}),
            "data.split: give train, val and test all as counts (integers) or all as fractions",
        ),
        (with_changes(data={"split": {"train": 0.8, "val": 0.3}}), "data.split: fractions add up to 1.1, more than 1"),
        (with_changes(model={"type_names": ["Cu", "Au"]}), "model.type_names: set the model's types in data.type_names"),
        (
            with_changes(model={"from_checkpoint": "old/best.ckpt"}),
            "model.r_max: a fine-tuned model keeps the hyperparameters of the model it starts from; remove this key",
        ),
        (
            with_changes(model={"refit_energy_shifts": True}),
            "model.refit_energy_shifts: only used with from_checkpoint or from_package",
        ),
        (
            with_changes(data={"species_to_type": {"Ag": "Ag"}}),
            "data.species_to_type.Ag: 'Ag' is not one of data.type_names ['Cu', 'Au']",
        ),
        (with_changes(ema={"decay": 1.5}), "ema.decay: must be between 0 and 1 (exclusive), got 1.5"),
        (with_changes(optimizer={"lr": -1}), "optimizer.lr: must be greater than 0, got -1"),
        (with_changes(optimizer={"lr": 0.0}), "optimizer.lr: must be greater than 0, got 0.0"),
        (with_changes(model={"l_max": -1}), "model.l_max: must be an integer at least 0, got -1"),
        (with_changes(model={"num_layers": 0}), "model.num_layers: must be an integer at least 1, got 0"),
        (with_changes(model={"num_features": 0}), "model.num_features: must be an integer at least 1, got 0"),
        (with_changes(model={"r_max": -4.0}), "model.r_max: must be a finite number greater than 0, got -4.0"),
        (with_changes(model={"avg_num_neighbors": 0}), "model.avg_num_neighbors: must be a finite number greater than 0, got 0.0"),
        (
            with_changes(data={"type_names": ["Cu", "Cu"]}),
            "data.type_names: 'Cu' appears more than once; give each type once",
        ),
        (
            with_changes(model={"per_type_energy_shifts": {"Cu": 1.0}}),
            "model.per_type_energy_shifts: must give a value for each of the model's types ['Cu', 'Au'];"
            " unknown: [], missing: ['Au']",
        ),
        (with_changes(data={"batch_size": 0}), "data.batch_size: must be at least 1, got 0"),
        (with_changes(data={"val_batch_size": 0}), "data.val_batch_size: must be at least 1, got 0"),
        (with_changes(data={"energy_units_to_eV": 0}), "data.energy_units_to_eV: must be greater than 0, got 0"),
        (with_changes(loss={"huber_delta": 0}), "loss.huber_delta: must be greater than 0, got 0"),
        (with_changes(loss={"forces": -1}), "loss.forces: must be at least 0, got -1"),
        (with_changes(lr_scheduler={"factor": 1}), "lr_scheduler.factor: must be between 0 and 1 (exclusive), got 1"),
        (with_changes(trainer={"max_epochs": 0}), "trainer.max_epochs: must be at least 1, got 0"),
        (with_changes(trainer={"seed": -1}), "trainer.seed: must be at least 0 and at most 4294967295, got -1"),
        (with_changes(trainer={"gradient_clip_val": 0}), "trainer.gradient_clip_val: must be greater than 0, got 0"),
        (
            with_changes(trainer={"max_time": "abc"}),
            'trainer.max_time: expected "DD:HH:MM:SS" (e.g. "00:12:00:00" for 12 hours) or a number of seconds, got \'abc\'',
        ),
        (with_changes(trainer={"max_time": -5}), "trainer.max_time: must be a positive duration, got -5.0"),
        (with_changes(trainer={"max_time": True}), "trainer.max_time: expected a string or a number, got bool True"),
        (
            with_changes(trainer={"max_epochs": 3, "check_val_every_n_epoch": 4}),
            "trainer.check_val_every_n_epoch: 4 is more than trainer.max_epochs 3, so no validation would run and"
            " no best.ckpt be saved; lower it or raise max_epochs",
        ),
        (
            with_changes(data={"format": "foo"}),
            "data.format: 'foo' is not a format ASE can read; give an ASE format name (e.g. 'extxyz';"
            " `ase info --formats` lists them), or leave data.format out to guess it from the file name",
        ),
        (
            with_changes(data={"format": "extxy"}),
            "data.format: 'extxy' is not a format ASE can read; did you mean 'extxyz'? give an ASE format name"
            " (e.g. 'extxyz'; `ase info --formats` lists them), or leave data.format out to guess it from the file name",
        ),
        (
            with_changes(model={"per_edge_type_cutoff": {"Cu": {"Au": "far"}}}),
            "model.per_edge_type_cutoff.Cu.Au: expected a number, got str 'far'",
        ),
        (with_changes(data={"split": {"train": "x", "val": 2}}), "data.split.train: expected an integer or a number, got str 'x'"),
        (with_changes(lr_scheduler={"patiense": 3}), "lr_scheduler.patiense: unknown key (did you mean 'patience'?)"),
        (with_changes(lr_scheduler={"zzz": 3}), "lr_scheduler.zzz: unknown key (valid keys: name, factor, patience, min_lr)"),
        (with_changes(trainer={"precision": "64-true"}), "trainer.precision: '64-true' needs model.model_dtype 'float64'"),
        (
            with_changes(loss={"energy_per_atom": 0, "forces": 0}),
            "loss: at least one of energy_per_atom, forces and stress must be positive",
        ),
    ],
)
def test_malformed_config_gives_one_exact_message(raw, message):
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    assert str(error.value) == message


def test_fine_tuning_config_needs_no_hyperparameters():
    raw = with_changes(model={"r_max": None, "num_layers": None, "from_checkpoint": "old/best.ckpt"})
    raw["data"].pop("type_names")
    config = validate_config(raw)
    assert config.fine_tuning and config.model.from_checkpoint == "old/best.ckpt"


# a value other than the default for each of NequIPModel's arguments, as written in YAML
NON_DEFAULT_MODEL = {
    "r_max": 4.5,
    "l_max": 2,
    "parity": False,
    "num_layers": 2,
    "num_features": 8,
    "num_bessels": 6,
    "polynomial_cutoff_p": 5.0,
    "radial_mlp_depth": 1,
    "radial_mlp_width": 16,
    "avg_num_neighbors": 12.0,
    "per_type_energy_shifts": {"Cu": -3.5, "Au": -3.8},
    "per_type_energy_scales": [0.5, 0.7],
    "per_edge_type_cutoff": {"Cu": {"Au": 4.0}},
    "model_dtype": "float64",
    "zbl": {"atomic_numbers": {"Cu": 29, "Au": 79}, "inner_radius": 1.0, "outer_radius": 1.5},
    "closest_training_pair": 1.9,
}


def test_every_model_argument_written_in_the_file_reaches_the_model():
    arguments = set(MODEL_ARGUMENTS) - {"type_names"}
    assert set(NON_DEFAULT_MODEL) == arguments  # a new argument needs a value here (and a schema field)
    config = validate_config(with_changes(model=NON_DEFAULT_MODEL))
    # build_model: zbl as written (a partial mapping) resolved, the rest as NequIPModel takes it
    model = build_model(dict(type_names=config.data.type_names, **config.model.hyperparameters()))
    expected = dict(NON_DEFAULT_MODEL, type_names=["Cu", "Au"], per_type_energy_shifts=[-3.5, -3.8])
    expected["per_edge_type_cutoff"] = [4.5, 4.0, 4.5, 4.5]
    expected["zbl"] = {"atomic_numbers": [29, 79], "inner_radius": [1.0] * 4, "outer_radius": [1.5] * 4}
    assert model.config == expected
    for name in arguments:  # and none of them is the model's default
        assert expected[name] != inspect.signature(NequIPModel.__init__).parameters[name].default, name


def test_model_arguments_left_out_are_the_models_defaults():
    config = validate_config(with_changes(model={"num_layers": None}))
    schema_defaults = NequIPModel(type_names=["Cu", "Au"], **config.model.hyperparameters()).config
    assert schema_defaults == NequIPModel(type_names=["Cu", "Au"], r_max=4.0).config


def test_fine_tuning_refuses_a_hyperparameter_written_with_its_default_value():
    raw = with_changes(model={"r_max": None, "num_layers": None, "from_checkpoint": "old/best.ckpt"})
    raw["model"]["l_max"] = ModelConfig().l_max  # the default, written out: still given
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    assert str(error.value) == (
        "model.l_max: a fine-tuned model keeps the hyperparameters of the model it starts from; remove this key"
    )
    raw["model"].pop("l_max")
    with pytest.raises(ConfigError) as error:
        validate_config(apply_overrides(raw, ["model.parity=true"]))
    assert str(error.value) == (
        "model.parity: a fine-tuned model keeps the hyperparameters of the model it starts from; remove this key"
    )


def test_a_fine_tuning_config_records_no_hyperparameters_and_reads_back():
    raw = with_changes(model={"r_max": None, "num_layers": None, "from_checkpoint": "old/best.ckpt"})
    config = validate_config(raw)
    written = config_to_dict(config)
    assert written["model"] == {"from_checkpoint": "old/best.ckpt", "from_package": None, "refit_energy_shifts": False}
    assert validate_config(yaml.safe_load(yaml.safe_dump(written))) == config


def test_overrides_are_applied_and_validated_like_the_file():
    raw = apply_overrides(copy.deepcopy(VALID), ["trainer.max_epochs=7", "optimizer.lr=1e-3", "ema=null"])
    config = validate_config(raw)
    assert config.trainer.max_epochs == 7
    assert config.optimizer.lr == 1e-3
    assert config.ema is None
    with pytest.raises(ConfigError) as error:
        validate_config(apply_overrides(copy.deepcopy(VALID), ["trainer.max_epoch=3"]))
    assert str(error.value) == "trainer.max_epoch: unknown key (did you mean 'max_epochs'?)"
    with pytest.raises(ConfigError) as error:
        apply_overrides(copy.deepcopy(VALID), ["trainer.max_epochs"])
    assert str(error.value) == "override 'trainer.max_epochs': expected key.sub=value"


def test_resolved_config_round_trips():
    config = validate_config(VALID)
    assert validate_config(yaml.safe_load(yaml.safe_dump(config_to_dict(config)))) == config


def test_load_config_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "missing.yaml")
    assert str(error.value) == f"cannot read configuration file {tmp_path / 'missing.yaml'}: No such file or directory"
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "empty.yaml")
    assert str(error.value) == f"{tmp_path / 'empty.yaml'} is empty"


def test_max_time_is_read_as_lightning_reads_it():
    assert parse_max_time("01:02:03:04") == datetime.timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert parse_max_time(90) == datetime.timedelta(seconds=90)
    assert validate_config(with_changes(trainer={"max_time": "00:12:00:00"})).trainer.max_time == "00:12:00:00"


def test_load_config_refuses_duplicate_keys_at_any_level(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "output_dir: out\ndata:\n  file: a.xyz\nmodel:\n  r_max: 4.0\n  r_max: 5.0\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path} is not valid YAML: line 6, column 3: duplicate key 'r_max' (first on line 5); give each key once"
    )
    path.write_text("output_dir: out\ndata:\n  file: a.xyz\ndata:\n  file: b.xyz\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path} is not valid YAML: line 4, column 1: duplicate key 'data' (first on line 2); give each key once"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epochs=0"], "trainer.max_epochs: must be at least 1, got 0"),
        (["optimizer.lr=-1"], "optimizer.lr: must be greater than 0, got -1"),
        (
            ["trainer.max_time=abc"],
            'trainer.max_time: expected "DD:HH:MM:SS" (e.g. "00:12:00:00" for 12 hours) or a number of seconds, got \'abc\'',
        ),
        (["trainer.max_epochs=[1"], "override 'trainer.max_epochs=[1': value is not valid YAML (line 1, column 3: expected ',' or ']', but got '<stream end>')"),
    ],
)
def test_cli_rejects_bad_overrides_before_anything_is_written(tmp_path, capsys, overrides, message):
    raw = copy.deepcopy(VALID)
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert nequip_train([str(path), *overrides]) == 2
    assert capsys.readouterr().err == f"nequip-train: invalid configuration {path}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_cli_refuses_a_binary_file_as_config(tmp_path, capsys):
    path = tmp_path / "best.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", bytes(range(256)))
    assert nequip_train([str(path)]) == 2
    assert capsys.readouterr().err == (
        f"nequip-train: invalid configuration {path}: {path} is not a text file (not UTF-8);"
        " give the YAML configuration file (see examples/minimal.yaml)\n"
    )


def test_cli_prints_the_json_schema(capsys):
    assert nequip_train(["--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "nequip-train configuration"
    assert schema["required"] == ["output_dir", "data", "model"]
    assert schema["additionalProperties"] is False
    lr = schema["$defs"]["OptimizerConfig"]["properties"]["lr"]
    assert lr["exclusiveMinimum"] == 0 and lr["default"] == 0.01
    assert set(schema["$defs"]["TrainerConfig"]["properties"]) == set(TrainerConfig.model_fields)


def assert_read_back(written, resolved, path=""):
    """Every value written in a configuration file is in the resolved configuration as written."""
    if isinstance(written, dict):
        for key, value in written.items():
            assert key in resolved, f"{path}{key}"
            assert_read_back(value, resolved[key], f"{path}{key}.")
    else:
        assert resolved == written, path


@pytest.mark.parametrize("path", sorted(REPO.glob("examples/*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    assert_read_back(yaml.safe_load(path.read_text()), config_to_dict(load_config(path)))


def test_examples_have_configs():
    assert {"minimal.yaml", "aspirin.yaml"} <= {p.name for p in REPO.glob("examples/*.yaml")}


def test_cli_rejects_bad_config_before_anything_runs(tmp_path, capsys):
    raw = with_changes(data={"batch_sise": 4})
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert nequip_train([str(path)]) == 2
    assert capsys.readouterr().err == (
        f"nequip-train: invalid configuration {path}: data.batch_sise: unknown key (did you mean 'batch_size'?)\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, lowest",
    [("l_max", 0), ("num_layers", 1), ("num_features", 1), ("num_bessels", 1), ("radial_mlp_depth", 0), ("radial_mlp_width", 1)],
)
def test_model_bounds_are_the_models_own_with_its_message(name, lowest):
    # the configuration refuses what NequIPModel refuses, only that, and in its words
    assert getattr(validate_config(with_changes(model={name: lowest})).model, name) == lowest
    with pytest.raises(ConfigError) as in_config:
        validate_config(with_changes(model={name: lowest - 1}))
    with pytest.raises(HyperparameterError) as in_model:
        NequIPModel(type_names=["Cu", "Au"], r_max=4.0, **{name: lowest - 1})
    assert str(in_model.value) == f"{name}: must be an integer at least {lowest}, got {lowest - 1}"
    assert str(in_config.value) == f"model.{in_model.value}"


def test_the_config_yaml_a_run_wrote_reads_back_as_that_run(trained_run):
    """A run writes its sections and its resolved model (``resolved_model``) to config.yaml;
    reading that file back (to resume, or to train again from it) gives the same sections."""
    written = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert "resolved_model" in written
    config = load_config(trained_run / "config.yaml")
    assert config_to_dict(config) == {key: value for key, value in written.items() if key != "resolved_model"}
