"""Training throughput of the benchmark model (DESIGN.md) on 64-atom 3C-SiC frames.

Runs the real training stack (nequip.train: data module, LightningModule, Lightning Trainer
with EMA, checkpoints and logs) on rattled 2x2x2 conventional 3C-SiC cells with random
labels (speed does not depend on them), batch 4, float32, loss on energy per atom and forces
(``--stress`` adds the stress term). The first epoch is warm-up; the figures are the median
time of a training step (forward, forces by autograd, backward through them, optimiser, EMA)
and the time of a training epoch without its validation.

With ``--reference`` the reference release (nequip 0.19.1, in build/reference-venv, see
benchmarks/dev/compare_reference.py) then trains the same architecture on the same frame files,
batch size and loss with its own ``nequip-train``, timed by the same callback
(benchmarks/dev/step_timer.py), and the ratio of the median step times is printed.

    .venv/bin/python benchmarks/dev/train_throughput.py --frames 32 --epochs 3 --json train_throughput.json
    .venv/bin/python benchmarks/dev/train_throughput.py --frames 8 --epochs 3 --reference --json docs/train_throughput.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from nequip.benchmark import BENCHMARK_MODEL_CONFIG, machine_description, sic_supercell
from nequip.train import NequIPLightningModule, validate_config
from nequip.train.config import config_to_dict
from nequip.train.training import build_trainer, resolve_model
from nequip.utils.memory import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_timer import StepTimer  # noqa: E402

HERE = Path(__file__).resolve().parent


def write_frames(path: Path, count: int, seed: int) -> None:
    """Rattled 64-atom 3C-SiC cells with seeded random energy, force and stress labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        atoms = sic_supercell(64, seed=seed + index)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal(-500.0, 1.0)),
            forces=rng.normal(0.0, 1.0, (len(atoms), 3)),
            stress=rng.normal(0.0, 0.01, 6),
        )
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def run_reference(tmp: Path, args) -> dict:
    """The reference's training on our frame files, in its own venv (one JSON line back)."""
    from compare_reference import ensure_reference_venv, reference_python

    ensure_reference_venv()
    command = [
        str(reference_python()), str(HERE / "reference" / "train_reference.py"),
        str(tmp / "reference"), str(tmp / "train.xyz"), str(tmp / "val.xyz"), str(args.epochs), str(args.batch_size),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    # stderr passes through: a failing reference run prints its log there
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32, help="training frames (64 atoms each)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="including one warm-up epoch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--stress", action="store_true", help="also fit stresses (adds the strain derivative)")
    parser.add_argument(
        "--glibc-malloc-defaults", action="store_true",
        help="leave glibc's malloc as it is (nequip-train keeps freed memory: nequip.utils.memory.keep_freed_memory)",
    )
    parser.add_argument("--reference", action="store_true", help="also time the reference release on the same frames")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    torch.set_num_threads(args.threads)
    # what nequip-train does (nequip.train.train) before it builds the trainer
    kept_freed_memory = False if args.glibc_malloc_defaults else keep_freed_memory()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_frames(tmp / "train.xyz", args.frames, seed=0)
        write_frames(tmp / "val.xyz", 1, seed=10_000)
        model = {k: v for k, v in BENCHMARK_MODEL_CONFIG.items() if k != "type_names"}
        config = validate_config(
            {
                "output_dir": str(tmp / "out"),
                "data": {
                    "type_names": BENCHMARK_MODEL_CONFIG["type_names"],
                    "train_file": str(tmp / "train.xyz"),
                    "val_file": str(tmp / "val.xyz"),
                    "batch_size": args.batch_size,
                },
                "model": model,
                "loss": {"energy_per_atom": 1.0, "forces": 1.0, "stress": 1.0 if args.stress else 0.0},
                "trainer": {
                    "max_epochs": args.epochs,
                    "accelerator": "cpu",
                    "devices": 1,
                    "enable_progress_bar": False,
                    "log_every_n_steps": 1,
                },
            }
        )
        model_config, datamodule = resolve_model(config, None)
        module = NequIPLightningModule(model_config=model_config, config=config_to_dict(config))
        timer = StepTimer()
        trainer = build_trainer(config, extra_callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
        reference = run_reference(tmp, args) if args.reference else None

    measured_steps = [seconds for epoch, seconds in timer.steps if epoch > 0]
    measured_epochs = timer.epochs[1:]
    step_s = statistics.median(measured_steps)
    epoch_s = statistics.median(measured_epochs)
    report = {
        "benchmark": "training throughput, benchmark model, 64-atom 3C-SiC frames",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "model": BENCHMARK_MODEL_CONFIG,
        "avg_num_neighbors": model_config["avg_num_neighbors"],
        "edges_per_frame": float(model_config["avg_num_neighbors"] * 64),
        "loss": "energy_per_atom + forces" + (" + stress" if args.stress else ""),
        "frames": args.frames,
        "batch_size": args.batch_size,
        "steps_per_epoch": len(measured_steps) // len(measured_epochs),
        "measured_epochs": len(measured_epochs),
        "median_step_s": step_s,
        "frames_per_s": args.batch_size / step_s,
        "median_train_epoch_s": epoch_s,
        "frames_per_s_epoch": args.frames / epoch_s,
        "keep_freed_memory": kept_freed_memory,
        "machine": machine_description(),
    }
    print(
        f"benchmark model, 64-atom SiC, batch {args.batch_size}, float32, {report['loss']}, "
        f"{args.threads} threads{'' if kept_freed_memory else ', glibc malloc defaults'}:\n"
        f"  median step {step_s:.3f} s -> {report['frames_per_s']:.2f} frames/s; "
        f"train epoch ({args.frames} frames) {epoch_s:.2f} s -> {report['frames_per_s_epoch']:.2f} frames/s"
    )
    if reference is not None:
        reference_step_s = statistics.median(step["seconds"] for step in reference["steps"] if step["epoch"] > 0)
        report["reference"] = dict(
            version="nequip 0.19.1",
            median_step_s=reference_step_s,
            frames_per_s=args.batch_size / reference_step_s,
            steps=reference["steps"],
            command=reference["command"],
            config_yaml=reference["config_yaml"],
        )
        report["throughput_ratio_ours_over_reference"] = reference_step_s / step_s
        print(
            f"  reference (nequip 0.19.1): median step {reference_step_s:.3f} s -> "
            f"{report['reference']['frames_per_s']:.2f} frames/s; ours/reference frames/s "
            f"{report['throughput_ratio_ours_over_reference']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
