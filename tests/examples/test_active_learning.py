"""The active-learning example (examples/active_learning/run.py, docs/active_learning.md) run
as a user runs it: a committee of four tiny models, three rounds of LAMMPS MD with the deviation
file, selection by the trust window, EMT labels and fine-tuning: 270 s of CPU, trainings two at a
time (docs/active_learning.md#time)."""

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "active_learning" / "run.py"
ROUNDS, INITIAL_FRAMES, SELECTED_PER_ROUND = 3, 8, 8  # the script's


def run_example(output: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_active_learning_lowers_the_committee_test_error_every_round(tmp_path):
    out = tmp_path / "al"
    process = run_example(out)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [figures["round"] for figures in rounds] == list(range(ROUNDS + 1))

    errors = [figures["test_force_mae"] for figures in rounds]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.85 * errors[0], errors  # more than noise: three rounds of new data

    lo, hi = summary["trust_lo"], summary["trust_hi"]
    for figures in rounds[:ROUNDS]:
        directory = out / f"round_{figures['round']}"
        # the selection follows from model_devi.out and the window, frame by frame
        deviation = np.loadtxt(directory / "md" / "model_devi.out", ndmin=2)
        max_devi_f = deviation[:, 4]
        assert len(max_devi_f) == figures["md_frames"] == len(ase.io.read(directory / "md" / "frames.dump", ":", format="lammps-dump-text"))
        assert figures["candidates"] == np.sum((max_devi_f >= lo) & (max_devi_f < hi))
        assert figures["accurate"] == np.sum(max_devi_f < lo)
        assert figures["failed"] == np.sum(max_devi_f >= hi)
        assert figures["selected"] == min(SELECTED_PER_ROUND, figures["candidates"]) == SELECTED_PER_ROUND
        # the selected frames carry EMT labels and join the next round's training data
        selected = ase.io.read(directory / "selected.xyz", ":")
        assert len(selected) == SELECTED_PER_ROUND
        assert all(np.isfinite(atoms.get_forces()).all() for atoms in selected)
    for r, figures in enumerate(rounds):
        assert (out / f"round_{r}" / "committee.nequip.pth").is_file()
        assert figures["training_frames"] == INITIAL_FRAMES + r * SELECTED_PER_ROUND
        assert len(ase.io.read(out / "data" / f"train_{r}.xyz", ":")) == figures["training_frames"]
        assert all((out / f"round_{r}" / f"member_{k}" / "best.ckpt").is_file() for k in range(4))
    # nothing half-written is left behind
    assert not list(out.rglob("*.tmp")) and not list(out.glob("round_*/.md.*"))
    # the per-round table, as printed at the end
    assert "round  training frames  test force MAE, eV/Å" in process.stdout
    assert f"{errors[-1]:.4f}" in process.stdout.splitlines()[-1]


def test_an_output_directory_in_use_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "al"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    process = run_example(out)
    assert process.returncode == 2
    assert f"error: {out} is not empty: give a new directory (each run starts from round 0)" in process.stderr
    assert sorted(path.name for path in out.iterdir()) == ["keep.txt"]
