"""A Lightning callback that times training steps; used by our training benchmark and, inside
build/reference-venv, by the reference's (benchmarks/dev/reference/train_reference.py), so that both
sides are timed by the same code.

Steps are timed from ``on_train_batch_start`` to ``on_train_batch_end`` (forward, forces by
autograd, backward through them, optimiser step); epochs from their start to the start of
their validation. With ``path`` set, every step is appended to that file as a JSON line.
"""

import json
import time

from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    def __init__(self, path=None):
        self.path = path
        self.steps = []  # (epoch, seconds)
        self.epochs = []
        self._epoch_timed = True  # no epoch open yet (e.g. during the sanity-check validation)

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = time.perf_counter()
        self._epoch_timed = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self._step_start
        self.steps.append((trainer.current_epoch, seconds))
        print(f"epoch {trainer.current_epoch} step {batch_idx}: {seconds:.3f} s", flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"epoch": trainer.current_epoch, "seconds": seconds}) + "\n")

    def on_validation_epoch_start(self, trainer, pl_module):
        # validation runs at the end of each training epoch: the training part ends here
        if not self._epoch_timed:
            self.epochs.append(time.perf_counter() - self._epoch_start)
            self._epoch_timed = True
