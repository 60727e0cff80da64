"""Helpers of the training tests: EMT data, tiny configurations, metrics logs."""

import csv
import importlib.util
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]
TYPE_NAMES = ["Cu", "Au"]

# small enough to train an epoch in about a second on a shared CPU
TINY_MODEL = dict(r_max=4.0, l_max=1, num_layers=1, num_features=4, num_bessels=4, radial_mlp_depth=1, radial_mlp_width=8)
SMALL_MODEL = dict(r_max=4.0, l_max=1, num_layers=2, num_features=8, radial_mlp_width=16)


def make_emt_data():
    """examples/make_emt_data.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_emt_data", REPO / "examples" / "make_emt_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_dict(data_file, output_dir, split=None, model=None, max_epochs=2, **sections) -> dict:
    """A training configuration (as parsed YAML) for an EMT Cu/Au file."""
    config = {
        "output_dir": str(output_dir),
        "data": {
            "type_names": TYPE_NAMES,
            "file": str(data_file),
            "split": split or {"train": 6, "val": 2, "seed": 1},
            "batch_size": 2,
        },
        "model": dict(TINY_MODEL if model is None else model),
        "ema": {"decay": 0.9},
        "trainer": {"max_epochs": max_epochs, "seed": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    for name, value in sections.items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, dict) else value
    return config


def logged_column(output_dir, name: str) -> List[float]:
    """The values of one metric in a run's CSV logs (one file per launch), in logging order."""
    values = []
    log_dirs = sorted(Path(output_dir, "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for log_dir in log_dirs:
        with open(log_dir / "metrics.csv") as f:
            values += [float(row[name]) for row in csv.DictReader(f) if row.get(name)]
    return values
