"""SIGTERM (what batch schedulers send at a time limit) stops training with last.ckpt saved and
exit status 143, and the same command resumes it to the weights of an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from nequip.scripts.train import main as nequip_train
from nequip.train import load_checkpoint, train, validate_config
from nequip.train import training
from nequip.train.callbacks import TrainingStopped

from fixtures.training import training_config

# batches of one frame: six training batches an epoch, so a signal can land mid-epoch
EPOCHS = 3


def sigterm_config(data, output_dir, **trainer):
    raw = training_config(data, output_dir, max_epochs=EPOCHS)
    raw["data"]["batch_size"] = 1
    raw["lr_scheduler"] = {"patience": 0}  # the scheduler acts every epoch: its state must resume too
    raw["trainer"].update(trainer)
    return raw


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    """last.ckpt of uninterrupted runs, by check_val_every_n_epoch."""
    runs = {}

    def run(every: int):
        if every not in runs:
            output_dir = tmp_path_factory.mktemp("uninterrupted") / "out"
            train(validate_config(sigterm_config(tiny_data, output_dir, check_val_every_n_epoch=every)))
            runs[every] = load_checkpoint(output_dir / "last.ckpt")
        return runs[every]

    return run


def assert_same_run(resumed, straight):
    assert resumed["global_step"] == straight["global_step"] == 6 * EPOCHS
    for key in ("state_dict", "current_model_state"):
        for name in straight[key]:
            assert torch.equal(resumed[key][name], straight[key][name]), (key, name)
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]


def test_sigterm_mid_epoch_exits_143_and_the_same_command_resumes_exactly(tiny_data, tmp_path, uninterrupted):
    output_dir = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sigterm_config(tiny_data, output_dir)))
    process = subprocess.Popen(
        [sys.executable, "-m", "nequip.scripts.train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        for line in process.stdout:
            if line.startswith(f"epoch 1/{EPOCHS}"):  # printed at the end of the first epoch
                time.sleep(0.1)  # into the second epoch, as a rule (wherever it lands, the run resumes exactly)
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    last = output_dir / "last.ckpt"
    if process.returncode == 0:
        # on a loaded machine the signal can land in the last epoch's end, which ends the run as
        # usual: then the run is whole
        assert_same_run(load_checkpoint(last), uninterrupted(1))
        return
    assert process.returncode == 143, stderr
    stop = stderr.splitlines()[-1]
    assert re.fullmatch(
        rf"nequip-train: stopped by SIGTERM (in epoch [23], after batch [1-5] of 6|after epoch [12]);"
        rf" saved {re.escape(str(last))}; resume with: nequip-train {re.escape(str(config))}",
        stop,
    ), stop
    assert "Traceback" not in stderr

    assert nequip_train([str(config)]) == 0
    assert_same_run(load_checkpoint(last), uninterrupted(1))


class SendSIGTERM(Callback):
    """Sends this process SIGTERM once: at a training step, or in the validation after an epoch."""

    def __init__(self, step=None, validation_of_epoch=None):
        self.step, self.validation_of_epoch = step, validation_of_epoch
        self.sent = False

    def _send(self):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self._send()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.current_epoch + 1 == self.validation_of_epoch:
            self._send()


@pytest.fixture
def sigterm_at(monkeypatch):
    """``sigterm_at(**where)``: training runs from then on send themselves SIGTERM once, as
    SendSIGTERM(**where) says."""
    # should the handler under test be missing, the signal must not end the test session
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    build_trainer = training.build_trainer

    def arrange(**where):
        sender = SendSIGTERM(**where)
        monkeypatch.setattr(
            training,
            "build_trainer",
            lambda config, extra_callbacks=(): build_trainer(config, extra_callbacks=[*extra_callbacks, sender]),
        )

    yield arrange
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(
    "where, every, stopped",
    [
        (dict(step=8), 1, "in epoch 2, after batch 3 of 6"),
        # in the last epoch: its end saves last.ckpt before the scheduler step, as an uninterrupted run's does
        (dict(step=14), 1, "in epoch 3, after batch 3 of 6"),
        # the last batch of an epoch: the epoch ends (validation, scheduler step) before the run stops
        (dict(step=5), 1, "after epoch 1"),
        # the same in an epoch without validation (Lightning saves last.ckpt again as fit ends)
        (dict(step=5), 2, "after epoch 1"),
        (dict(validation_of_epoch=2), 1, "after epoch 2"),
    ],
)
def test_sigterm_in_process_resumes_exactly_wherever_it_stopped(tiny_data, tmp_path, uninterrupted, sigterm_at, where, every, stopped):
    raw = sigterm_config(tiny_data, tmp_path / "out", check_val_every_n_epoch=every)
    sigterm_at(**where)
    with pytest.raises(TrainingStopped) as error:
        train(validate_config(raw))
    last = tmp_path / "out" / "last.ckpt"
    assert str(error.value) == f"stopped by SIGTERM {stopped}; saved {last}"
    assert error.value.resumable

    train(validate_config(raw))
    assert_same_run(load_checkpoint(last), uninterrupted(every))


def test_sigterm_in_the_last_validation_skips_the_test_data_and_says_so(tiny_data, tmp_path, sigterm_at, capsys):
    raw = sigterm_config(tiny_data, tmp_path / "out")
    raw["data"]["split"] = {"train": 6, "val": 2, "test": 2, "seed": 1}
    sigterm_at(validation_of_epoch=EPOCHS)
    with pytest.raises(TrainingStopped) as error:
        train(validate_config(raw))
    output_dir = tmp_path / "out"
    assert str(error.value) == (
        f"stopped by SIGTERM after the last epoch: {output_dir / 'last.ckpt'} holds the finished run, but the test"
        f" data were not evaluated (nequip-test {output_dir / 'best.ckpt'} evaluates them)"
    )
    assert not error.value.resumable
    assert "test_forces_mae" not in capsys.readouterr().out
    assert load_checkpoint(output_dir / "last.ckpt")["global_step"] == 6 * EPOCHS
