"""Data-parallel training through Lightning's DDP strategy: two CPU processes (gloo)."""

import subprocess
import sys

import pytest
import yaml

from nequip.train import load_checkpoint

from fixtures.training import training_config


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_checkpoint(tiny_data, tmp_path):
    raw = training_config(tiny_data, tmp_path / "out", max_epochs=1)
    raw["trainer"].update(strategy="ddp", devices=2)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    # Lightning starts the second process by re-running this command
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.train", str(config_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "distributed_backend=gloo" in output
    assert "Starting with 2 processes" in output
    checkpoint = load_checkpoint(tmp_path / "out" / "last.ckpt")
    # 6 training frames, batch 2, split over 2 processes: 2 steps each
    assert checkpoint["global_step"] == 2
