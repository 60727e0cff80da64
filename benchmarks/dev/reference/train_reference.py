"""Training throughput of the reference release (nequip 0.19.1) on the frames our benchmark uses.

Runs inside build/reference-venv (never in ours), through the reference's own ``nequip-train``
with the benchmark architecture, batch size, loss (energy per atom + forces) and an Adam
optimiser, plus benchmarks/dev/step_timer.py as a callback (the same timer as ours).

    build/reference-venv/bin/python benchmarks/dev/reference/train_reference.py WORKDIR TRAIN.xyz VAL.xyz EPOCHS BATCH
Prints one JSON line: every step's (epoch, seconds), the config and the command.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_reference import ARCHITECTURE, CONFIG  # noqa: E402


def main():
    workdir, train, val = (Path(p).resolve() for p in sys.argv[1:4])
    epochs, batch_size = int(sys.argv[4]), int(sys.argv[5])
    workdir.mkdir(parents=True, exist_ok=True)
    steps_file = workdir / "steps.jsonl"
    steps_file.unlink(missing_ok=True)
    config = CONFIG.format(data=train, **ARCHITECTURE)
    # the compile benchmark's config, turned into a training run: the validation file, batch
    # size, epochs, a real optimiser and the step timer
    edits = [
        (f"val_file_path: {train}", f"val_file_path: {val}"),
        ("batch_size: 1", f"batch_size: {batch_size}"),
        ("max_epochs: 1", f"max_epochs: {epochs}"),
        ("_target_: torch.optim.SGD\n    lr: 0.0", "_target_: torch.optim.Adam\n    lr: 0.001"),
        ("  callbacks:\n", f"  callbacks:\n    - _target_: step_timer.StepTimer\n      path: {steps_file}\n"),
    ]
    for old, new in edits:
        if old not in config:
            sys.exit(f"build_reference.CONFIG no longer contains {old!r}: update train_reference.py")
        config = config.replace(old, new)
    (workdir / "config.yaml").write_text(config)
    command = [
        str(Path(sys.executable).parent / "nequip-train"), "-cp", str(workdir), "-cn", "config",
        f"hydra.run.dir={workdir / 'train'}",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    with open(workdir / "train.log", "w") as log:
        finished = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        sys.exit(f"reference training failed; its log: {workdir / 'train.log'}\n" + (workdir / "train.log").read_text()[-3000:])
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()]
    print(json.dumps(dict(steps=steps, config_yaml=config, command=" ".join(command))))


if __name__ == "__main__":
    main()
