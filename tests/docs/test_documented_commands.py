"""Every command the README and docs/ show is run here, in order, on a small Cu/Au model.

Fenced blocks tagged ``console`` (shell lines), ``python`` and ``lammps`` (saved as
``in.lammps``, run by a later ``console`` line) are executed in one working directory that
holds ``config.yaml`` (a tiny model, ``output_dir: .``) and ``data.xyz`` (EMT-labelled Cu/Au);
untagged blocks are illustrations. A failing command fails the test with its output.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```(console|python|lammps)\n(.*?)^```", re.MULTILINE | re.DOTALL)

CONFIG = """\
output_dir: .
data:
  type_names: [Cu, Au]
  file: data.xyz
  split: {train: 8, val: 4, seed: 0}
  batch_size: 4
model: {r_max: 4.0, l_max: 1, num_layers: 2, num_features: 4, radial_mlp_width: 8}
loss: {energy_per_atom: 1.0, forces: 1.0, stress: 1.0}
trainer: {max_epochs: 2, enable_progress_bar: false}
"""

# what the python blocks may assume: a periodic Cu/Au structure called `atoms`
PYTHON_PRELUDE = """\
import numpy as np
from ase.build import bulk
atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 2, 2))
atoms.symbols = np.random.default_rng(0).choice(["Cu", "Au"], size=len(atoms))
"""


def documented_blocks():
    for document in DOCUMENTS:
        for language, body in BLOCK.findall(document.read_text()):
            yield document.relative_to(ROOT), language, body


def shell_lines(body: str):
    for line in body.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            yield command


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("docs")
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_emt_data.py"), "data.xyz", "--frames", "12", "--seed", "0"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    (directory / "config.yaml").write_text(CONFIG)
    import ase.io

    structure = ase.io.read(directory / "data.xyz", index=0)
    ase.io.write(directory / "system.data", structure, format="lammps-data", specorder=["Cu", "Au"], masses=True)
    return directory


def run(command, cwd: Path, label: str):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    process = subprocess.run(command, cwd=cwd, env=env, shell=isinstance(command, str), capture_output=True, text=True)
    assert process.returncode == 0, f"{label} failed ({process.returncode}):\n{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
    return process.stdout


@pytest.mark.slow
def test_every_documented_command_runs(workdir):
    blocks = list(documented_blocks())
    assert {language for _, language, _ in blocks} == {"console", "python", "lammps"}
    commands_run = []
    for document, language, body in blocks:
        if language == "lammps":
            (workdir / "in.lammps").write_text(body)
        elif language == "python":
            run([sys.executable, "-c", PYTHON_PRELUDE + body], workdir, f"{document}: python block\n{body}")
        else:
            for command in shell_lines(body):
                run(command, workdir, f"{document}: {command}")
                commands_run.append(command)

    # the products of the README's pipeline are there, and the benchmark's figures make sense
    for product in ("best.ckpt", "last.ckpt", "m.nequip.zip", "m.nequip.pt2", "m.nequip.pth", "test/metrics.json"):
        assert (workdir / product).is_file(), product
    report = json.loads((workdir / "benchmark" / "benchmark.json").read_text())
    assert {"command", "date", "machine", "results"} <= report.keys()
    assert {(row["engine"], row["format"], row["atoms"]) for row in report["results"]} == {
        (engine, fmt, atoms) for engine in ("ase", "lammps") for fmt in ("pt2", "pth") for atoms in (64, 512)
    }
    for row in report["results"]:
        for field in ("timesteps_per_s", "ns_per_day", "us_per_atom_step", "peak_memory_mib"):
            assert math.isfinite(row[field]) and row[field] > 0, (field, row)
    assert (workdir / "benchmark" / "benchmark.png").stat().st_size > 0
    assert any(command.startswith("nequip-package info") for command in commands_run)
