"""Helpers of the training tests: metrics logs. Data, configurations and the shared run are in
tests/fixtures/training.py."""

import csv
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]


def logged_column(output_dir, name: str) -> List[float]:
    """The values of one metric in a run's CSV logs (one file per launch), in logging order."""
    values = []
    log_dirs = sorted(Path(output_dir, "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for log_dir in log_dirs:
        with open(log_dir / "metrics.csv") as f:
            values += [float(row[name]) for row in csv.DictReader(f) if row.get(name)]
    return values
