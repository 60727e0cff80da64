"""Helpers of the package tests: training runs, predictions, bitwise comparison."""

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml

def run_nequip_train(config: dict, directory: Path) -> Path:
    """Train with ``nequip-train`` in a subprocess; return the run's ``last.ckpt``."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.train", str(config_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"nequip-train failed:\n{result.stdout}\n{result.stderr}"
    return Path(config["output_dir"]) / "last.ckpt"


OUTPUT_KEYS = ("atomic_energy", "total_energy", "forces", "stress", "virial")


def predictions(model, frames) -> List[Dict[str, torch.Tensor]]:
    """The model's outputs (FILE_CONTRACT §1) on each frame, computed on one thread.

    With several threads the force pass's scatter-adds accumulate in a varying order, so a model
    is not bitwise reproducible even against itself; on one thread it is.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [{key: model(dict(frame))[key].detach() for key in OUTPUT_KEYS} for frame in frames]
    finally:
        torch.set_num_threads(threads)


def assert_bitwise_equal(actual: List[Dict[str, torch.Tensor]], expected: List[Dict[str, torch.Tensor]]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype == torch.float64, key
            # equal_nan: the stress of a frame without a cell is NaN
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, equal_nan=True, msg=key)


def rewrite_archive(source: Path, target: Path, replace) -> Path:
    """Copy the zip archive ``source`` to ``target``, with some entries' bytes replaced.

    ``replace(name)`` gets each entry's name below the archive's top-level folder and returns
    new bytes, or None to keep the entry as it is.
    """
    import zipfile

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            data = replace(info.filename.partition("/")[2])
            copy.writestr(info.filename, original.read(info) if data is None else data)
    return target


@contextlib.contextmanager
def raises_exactly(exception_type, message: str):
    """Expect ``exception_type`` with exactly ``message``."""
    with pytest.raises(exception_type) as error:
        yield
    assert str(error.value) == message
