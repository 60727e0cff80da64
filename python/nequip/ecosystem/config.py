"""Training configurations of the other NequIP release (Hydra YAML with ``_target_`` keys) as ours.

``nequip-train`` refuses such a file with one message pointing to ``nequip-train --convert
their.yaml > ours.yaml``, which maps the keys of that release's tutorial and minimal configs:
data files and split, type names and species map, batch sizes, the model's hyperparameters
(those our NequIP model shares, same names), loss coefficients, optimizer, learning-rate
scheduler, EMA, early stopping, trainer limits and seed; every other key is listed as not mapped,
with the reason. Values given by interpolation (``${cutoff_radius}``, ``${int_mul:...}``,
``${oc.env:...}``) are resolved; ``${training_data_stats:...}`` becomes "computed from the
training data", which is what ours does for a key left out.

The result is our configuration for *our* NequIP model: same hyperparameter names, not the same
network (the other release's type embedding, readout and options such as a ZBL pair potential
have no counterpart); to keep training that release's model itself, fine-tune its package
(``model.from_package``).
"""

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

TARGET = "_target_"
# their top-level sections; any other top-level key is a variable for interpolation
_SECTIONS = ("run", "data", "trainer", "training_module", "global_options", "hydra")
_INTERPOLATION = re.compile(r"\$\{([^${}]+)\}")


def is_hydra_config(document: Any) -> bool:
    """Whether a parsed YAML document has ``_target_`` keys (the other release's configurations)."""
    if isinstance(document, dict):
        return TARGET in document or any(is_hydra_config(value) for value in document.values())
    if isinstance(document, list):
        return any(is_hydra_config(value) for value in document)
    return False


class _Converter:
    def __init__(self, their: Dict[str, Any], output_dir: str):
        self.their = their
        self.unmapped: List[str] = []
        self.ours: Dict[str, Any] = {"output_dir": output_dir, "data": {}, "model": {}}

    # -- interpolation ---------------------------------------------------------------------

    def value(self, value: Any, key: str) -> Any:
        """``value`` with interpolations resolved; ``_STATS`` for training-data statistics."""
        if isinstance(value, dict):
            return {k: self.value(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _INTERPOLATION.fullmatch(value.strip())
        if whole is not None:
            return self._resolve(whole.group(1), key)
        # nested (${int_div:${num_features},2}) or embedded in text: innermost first, as text
        text = value
        while (inner := _INTERPOLATION.search(text)) is not None:
            text = text[: inner.start()] + str(self._resolve(inner.group(1), key)) + text[inner.end() :]
        stripped = value.strip()
        return yaml.safe_load(text) if stripped.startswith("${") and stripped.endswith("}") else text

    def _resolve(self, expression: str, key: str) -> Any:
        name, _, argument = expression.partition(":")
        if not argument:
            found: Any = self.their
            for part in name.split("."):
                if not isinstance(found, dict) or part not in found:
                    raise _Unresolved(f"${{{expression}}} names no key of the file")
                found = found[part]
            return self.value(found, key)
        if name == "training_data_stats":
            return _STATS
        if name == "oc.env":
            variable, _, default = argument.partition(",")
            return yaml.safe_load(os.environ.get(variable.strip(), default.strip()))
        if name in ("int_mul", "int_div"):
            left, right = (int(yaml.safe_load(part)) for part in argument.split(","))
            return left * right if name == "int_mul" else left // right
        if name == "list_to_identity_dict":
            return {item: item for item in yaml.safe_load(argument)}
        raise _Unresolved(f"the resolver {name!r} has no counterpart here")

    def get(self, mapping: Dict[str, Any], key: str, path: str) -> Any:
        try:
            return self.value(mapping[key], path)
        except _Unresolved as reason:
            self.skip(path, str(reason))
            return None

    def skip(self, path: str, reason: str) -> None:
        self.unmapped.append(f"{path}: {reason}")

    # -- sections ----------------------------------------------------------------------------

    def convert(self) -> Tuple[Dict[str, Any], List[str]]:
        for key, value in self.their.items():
            if key not in _SECTIONS:
                continue  # a variable: its value arrives through interpolation
            if key == "run":
                runs = self.value(value, "run")
                if [r for r in runs if r not in ("train", "test")]:
                    self.skip("run", f"{runs}: ours trains, then tests when there is test data")
            elif key == "data":
                self.data(value)
            elif key == "trainer":
                self.trainer(value)
            elif key == "training_module":
                self.training_module(value)
            elif key == "global_options":
                for option, setting in value.items():
                    if not (option == "allow_tf32" and self.value(setting, f"global_options.{option}") is False):
                        self.skip(f"global_options.{option}", "no counterpart (compiled files record allow_tf32)")
            else:
                self.skip(key, "Hydra's own settings have no counterpart")
        if "seed" in self.their and "seed" not in self.ours.get("trainer", {}):
            self.ours.setdefault("trainer", {})["seed"] = self.value(self.their["seed"], "seed")
        return self.ours, self.unmapped

    def data(self, data: Dict[str, Any]) -> None:
        ours = self.ours["data"]
        seed = None
        for key, value in data.items():
            path = f"data.{key}"
            if key == TARGET:
                if value not in ("nequip.data.datamodule.ASEDataModule", "nequip.data.datamodule.NequIPDataModule"):
                    self.skip(path, f"{value}: ours reads files that ASE reads")
            elif key == "seed":
                seed = self.get(data, key, path)
            elif key == "split_dataset":
                split = {}
                for name, item in value.items():
                    if name == "file_path":
                        ours["file"] = self.get(value, name, f"{path}.{name}")
                    elif name in ("train", "val", "test"):
                        split[name] = self.get(value, name, f"{path}.{name}")
                    else:
                        self.skip(f"{path}.{name}", "ours reads one data file by ASE (split_dataset.file_path)")
                if split:
                    ours["split"] = split
            elif key in ("train_file_path", "val_file_path", "test_file_path"):
                ours[key.replace("_path", "")] = self.get(data, key, path)
            elif key == "transforms":
                for index, transform in enumerate(value):
                    self.transform(transform, f"{path}[{index}]")
            elif key in ("train_dataloader", "val_dataloader", "test_dataloader"):
                self.dataloader(self.value(value, path), key, path)
            elif key == "stats_manager":
                self.skip(path, "ours computes the statistics it needs from the training data")
            else:
                self.skip(path, "no counterpart")
        if seed is not None and "split" in ours:
            ours["split"]["seed"] = seed

    def transform(self, transform: Dict[str, Any], path: str) -> None:
        target = transform.get(TARGET)
        if target == "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper":
            for key in transform:
                if key == "model_type_names":
                    self.ours["data"]["type_names"] = self.get(transform, key, f"{path}.{key}")
                elif key == "chemical_species_to_atom_type_map":
                    mapping = self.get(transform, key, f"{path}.{key}")
                    if mapping is not None and any(s != t for s, t in mapping.items()):
                        self.ours["data"]["species_to_type"] = mapping
                elif key != TARGET:
                    self.skip(f"{path}.{key}", "no counterpart")
        elif target == "nequip.data.transforms.NeighborListTransform":
            for key in transform:
                if key == "r_max":
                    self.ours["model"].setdefault("r_max", self.get(transform, key, f"{path}.{key}"))
                elif key == "per_edge_type_cutoff":
                    cutoffs = self.get(transform, key, f"{path}.{key}")
                    if cutoffs is not None:
                        self.ours["model"].setdefault("per_edge_type_cutoff", cutoffs)
                elif key not in (TARGET, "type_names"):
                    self.skip(f"{path}.{key}", "ours makes the neighbor list from the model's cutoffs (vesin)")
        else:
            self.skip(path, f"the transform {target} has no counterpart")

    def dataloader(self, loader: Dict[str, Any], name: str, path: str) -> None:
        ours = self.ours["data"]
        for key, value in loader.items():
            if key == "batch_size" and name == "train_dataloader":
                ours["batch_size"] = value
            elif key == "batch_size" and name == "val_dataloader":
                ours["val_batch_size"] = value
            elif key == "num_workers" and name == "train_dataloader":
                ours["num_workers"] = value
            elif key == "shuffle" and value is True and name == "train_dataloader":
                pass  # ours shuffles the training frames
            elif key in (TARGET, "batch_size", "num_workers") or name == "test_dataloader":
                pass  # the validation batch size serves the test frames
            else:
                self.skip(f"{path}.{key}", "no counterpart")

    def trainer(self, trainer: Dict[str, Any]) -> None:
        ours = self.ours.setdefault("trainer", {})
        same = ("max_epochs", "max_time", "accelerator", "devices", "strategy", "log_every_n_steps",
                "check_val_every_n_epoch", "gradient_clip_val", "enable_progress_bar")  # fmt: skip
        for key, value in trainer.items():
            path = f"trainer.{key}"
            if key in same:
                ours[key] = self.get(trainer, key, path)
            elif key == "precision" and str(self.value(value, path)) in ("64", "64-true"):
                ours["precision"] = "64-true"
            elif key in (TARGET, "enable_checkpointing"):
                pass
            elif key == "callbacks":
                for index, callback in enumerate(value or []):
                    self.callback(callback, f"{path}[{index}]")
            elif key == "logger":
                self.skip(path, "ours logs to CSV (and TensorBoard when installed) in output_dir/logs")
            else:
                self.skip(path, "no counterpart")

    def callback(self, callback: Dict[str, Any], path: str) -> None:
        target = callback.get(TARGET, "")
        if target.endswith("callbacks.EarlyStopping"):
            stopping = {}
            for key, kind in (("patience", int), ("min_delta", float)):
                if key in callback:
                    # (PyYAML reads 1e-3 as text; YAML 1.2 and OmegaConf as a number)
                    stopping[key] = kind(self.get(callback, key, f"{path}.{key}"))
            self.ours["early_stopping"] = stopping
        elif target.endswith(("callbacks.ModelCheckpoint", "callbacks.LearningRateMonitor")):
            pass  # ours saves best.ckpt and last.ckpt and logs the learning rate
        else:
            self.skip(path, f"the callback {target} has no counterpart")

    def training_module(self, module: Dict[str, Any]) -> None:
        target = module.get(TARGET, "")
        if target.endswith("EMALightningModule"):
            self.ours["ema"] = {"decay": self.value(module.get("ema_decay", 0.999), "training_module.ema_decay")}
        elif target.endswith("NequIPLightningModule"):
            self.ours["ema"] = None
        else:
            self.skip("training_module._target_", f"{target}: no counterpart")
        for key, value in module.items():
            path = f"training_module.{key}"
            if key in (TARGET, "ema_decay"):
                continue
            if key == "loss":
                self.loss(value, path)
            elif key == "optimizer":
                self.optimizer(self.value(value, path), path)
            elif key == "lr_scheduler":
                self.lr_scheduler(value, path)
            elif key == "model":
                self.model(value, path)
            elif key in ("val_metrics", "train_metrics", "test_metrics"):
                self.skip(path, "ours reports the MAE and RMSE of each learned quantity and monitors the validation loss")
            else:
                self.skip(path, "no counterpart")

    def loss(self, loss: Dict[str, Any], path: str) -> None:
        target = loss.get(TARGET, "")
        if target not in ("nequip.train.EnergyForceLoss", "nequip.train.EnergyForceStressLoss", "nequip.train.EnergyOnlyLoss"):
            self.skip(path, f"{target}: ours is a weighted sum of MSE (or Huber) terms")
            return
        ours = self.ours.setdefault("loss", {"energy_per_atom": 0.0, "forces": 0.0, "stress": 0.0})
        names = {"total_energy": "energy_per_atom", "per_atom_energy": "energy_per_atom", "forces": "forces",
                 "stress": "stress"}  # fmt: skip
        for key, value in loss.items():
            if key == "coeffs":
                for quantity, coefficient in self.value(value, f"{path}.coeffs").items():
                    if quantity in names:
                        ours[names[quantity]] = float(coefficient)
                    else:
                        self.skip(f"{path}.coeffs.{quantity}", "no counterpart")
            elif key == "per_atom_energy" and self.value(value, f"{path}.{key}") is False:
                self.skip(f"{path}.{key}", "false: ours fits the energy per atom")
            elif key not in (TARGET, "per_atom_energy"):
                self.skip(f"{path}.{key}", "no counterpart")

    def optimizer(self, optimizer: Dict[str, Any], path: str) -> None:
        names = {"torch.optim.Adam": "adam", "torch.optim.AdamW": "adamw"}
        if optimizer.get(TARGET) not in names:
            self.skip(path, f"{optimizer.get(TARGET)}: ours is adam or adamw")
            return
        ours = self.ours.setdefault("optimizer", {"name": names[optimizer[TARGET]]})
        for key, value in optimizer.items():
            if key in ("lr", "weight_decay", "amsgrad"):
                ours[key] = float(value) if key != "amsgrad" else value
            elif key != TARGET:
                self.skip(f"{path}.{key}", "no counterpart")

    def lr_scheduler(self, scheduler: Dict[str, Any], path: str) -> None:
        inner = self.value(scheduler.get("scheduler", {}), f"{path}.scheduler")
        if inner.get(TARGET) != "torch.optim.lr_scheduler.ReduceLROnPlateau":
            self.skip(path, f"{inner.get(TARGET)}: ours is ReduceLROnPlateau on the validation loss, or none")
            self.ours["lr_scheduler"] = None
            return
        ours = self.ours.setdefault("lr_scheduler", {"name": "reduce_on_plateau"})
        for key, value in inner.items():
            if key in ("factor", "min_lr"):
                ours[key] = float(value)
            elif key == "patience":
                ours[key] = int(value)
            elif key != TARGET:
                self.skip(f"{path}.scheduler.{key}", "no counterpart")
        for key in scheduler:
            if key not in ("scheduler", "monitor", "interval", "frequency"):
                self.skip(f"{path}.{key}", "no counterpart")

    def model(self, model: Dict[str, Any], path: str) -> None:
        target = model.get(TARGET, "")
        ours = self.ours["model"]
        if target == "nequip.model.ModelFromPackage":
            ours.clear()
            ours["from_package"] = self.get(model, "package_path", f"{path}.package_path")
            return
        if target not in ("nequip.model.NequIPGNNModel", "nequip.model.PresetNequIPGNNModel"):
            self.skip(path, f"{target}: no counterpart (ours trains its NequIP model, or fine-tunes a package)")
            return
        same = ("r_max", "l_max", "parity", "num_layers", "num_bessels", "polynomial_cutoff_p", "radial_mlp_depth",
                "radial_mlp_width", "per_edge_type_cutoff", "model_dtype")  # fmt: skip
        for key in model:
            key_path = f"{path}.{key}"
            if key == TARGET:
                continue
            value = self.get(model, key, key_path)
            if key in same:
                if value is not None:  # null: ours' default too
                    ours[key] = value
            elif key == "num_features" and isinstance(value, int):
                ours[key] = value
            elif key in ("avg_num_neighbors", "per_type_energy_shifts", "per_type_energy_scales"):
                if value is not _STATS:  # left out: computed from the training data, as there
                    ours[key] = value
            elif key == "type_names":
                self.ours["data"].setdefault("type_names", value)
            elif key == "seed":
                self.ours.setdefault("trainer", {})["seed"] = value
            elif key == "preset":
                self.skip(key_path, "set l_max, num_layers and num_features instead")
            else:
                self.skip(key_path, "no counterpart in our NequIP model")


class _Stats:
    def __repr__(self) -> str:
        return "training data statistics"


_STATS = _Stats()


class _Unresolved(Exception):
    pass


def convert_config(path: Path) -> Tuple[str, List[str]]:
    """Our configuration (YAML text, with the keys not mapped as comments on top) for the
    other release's configuration file at ``path``, and the list of keys not mapped."""
    path = Path(path)
    their = yaml.safe_load(path.read_text())
    if not isinstance(their, dict) or not is_hydra_config(their):
        raise ValueError(f"{path}: not a configuration of the other NequIP release (no '_target_' keys)")
    from nequip.train.config import ConfigError, validate_config

    converted, unmapped = _Converter(their, output_dir=f"results/{path.stem}").convert()
    ours = {key: converted[key] for key in _OUR_ORDER if key in converted and converted[key] != {}}
    header = [f"# converted from {path.name} (a configuration of the other NequIP release) by nequip-train --convert"]
    if unmapped:
        header.append("# not mapped:")
        header += [f"#   {line}" for line in unmapped]
    try:
        validate_config(ours)
    except ConfigError as error:  # e.g. data made by a dataset class rather than read from a file
        unmapped.append(f"still to do: {error}")
        header.append(f"# still to do: {error}")
    return "\n".join(header) + "\n" + yaml.safe_dump(ours, sort_keys=False), unmapped


_OUR_ORDER = ("output_dir", "data", "model", "loss", "optimizer", "lr_scheduler", "ema", "early_stopping", "trainer")


def hydra_refusal(path: Path) -> Optional[str]:
    """The message refusing the other release's configuration at ``path``, or None for ours."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # the configuration reader reports it
    if not is_hydra_config(document):
        return None
    return (
        f"{path} is a configuration of another NequIP release (Hydra, with '_target_' keys), which nequip-train "
        f"does not read; convert it: nequip-train --convert {path} > ours.yaml (it lists each key it cannot map)"
    )
