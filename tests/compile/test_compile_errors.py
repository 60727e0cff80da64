"""Bad requests to the compiler, the command line and the loader: one clear message each,
refused before any work, and no output file left behind."""

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

from fixtures.compiled import build_tiny_model, example_frame
from nequip._runtime import InputError, ModelFileError
from nequip.inference import open_model
from nequip.compile import CompileError, MetadataError, compile_model
from nequip.scripts import compile as cli

TESTS = Path(__file__).resolve().parents[1]

# Passed where a model is expected by requests that must be refused before the model is
# touched: using it at all would raise AttributeError instead of the message under test.
NOT_A_MODEL = None


@pytest.mark.parametrize(
    "name, mode, target, message",
    [
        (
            "model.nequip.pt2",
            "torchscript",
            None,
            "output file '{out}' does not match mode torchscript: its name must end in '.nequip.pth'",
        ),
        (
            "model.nequip.pth",
            "aotinductor",
            "ase",
            "output file '{out}' does not match mode aotinductor: its name must end in '.nequip.pt2'",
        ),
        (
            "model.pt2",
            "aotinductor",
            "ase",
            "output file '{out}' does not match mode aotinductor: its name must end in '.nequip.pt2'",
        ),
        ("model.nequip.pt2", "onnx", "ase", "unknown mode 'onnx': expected one of torchscript, aotinductor"),
        ("model.nequip.pt2", "aotinductor", "gromacs", "unknown target 'gromacs': expected one of ase, pair_nequip, pair_nequip_domain, batch"),
        (
            "model.nequip.pt2",
            "aotinductor",
            None,
            "mode aotinductor needs a target (the order of the flat inputs and outputs): one of ase, pair_nequip, pair_nequip_domain, batch",
        ),
    ],
)
def test_bad_request_is_refused_before_any_work(name, mode, target, message, tmp_path):
    out = tmp_path / name
    with pytest.raises(ValueError) as error:
        compile_model(NOT_A_MODEL, out, mode=mode, target=target)
    assert str(error.value) == message.format(out=out)
    assert list(tmp_path.iterdir()) == []


def test_unknown_device_is_refused(tmp_path):
    with pytest.raises(ValueError, match="^invalid device 'tpu': expected 'cpu', 'cuda' or 'cuda:<index>'$"):
        compile_model(NOT_A_MODEL, tmp_path / "m.nequip.pth", mode="torchscript", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="^device 'cuda' requested, but CUDA is not available to torch: "):
        compile_model(NOT_A_MODEL, tmp_path / "m.nequip.pt2", mode="aotinductor", device="cuda", target="ase")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu_is_one_message(tmp_path, capsys):
    out = tmp_path / "m.nequip.pt2"
    code, err = run_cli(capsys, tmp_path / "in.nequip.zip", out, "--mode", "aotinductor", "--target", "ase", "--device", "cuda")
    assert code == 2
    assert err == (
        "nequip-compile: error: device 'cuda' requested, but CUDA is not available to torch: use device 'cpu', or a "
        "CUDA build of torch on a machine with a GPU\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode, name", [("torchscript", "m.nequip.pth"), ("aotinductor", "m.nequip.pt2")])
def test_tf32_on_the_cpu_is_refused(mode, name, tmp_path, capsys):
    code, err = run_cli(capsys, tmp_path / "in.nequip.zip", tmp_path / name, "--mode", mode, "--target", "ase", "--tf32")
    assert code == 2
    assert err == (
        "nequip-compile: error: TF32 (TensorFloat-32 matmuls, --tf32) is a CUDA setting, but the device is 'cpu': "
        "drop --tf32, or compile with --device cuda\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_model_with_malformed_metadata_is_refused(tmp_path):
    model = build_tiny_model("float64")
    model.metadata = lambda: {**type(model).metadata(model), "r_max": "four"}
    with pytest.raises(MetadataError) as error:
        compile_model(model, tmp_path / "m.nequip.pth", mode="torchscript", example_data=example_frame())
    assert str(error.value) == "the model: metadata key 'r_max' is malformed: expected a positive decimal float, got 'four'"
    assert list(tmp_path.iterdir()) == []


def test_model_with_non_finite_weights_is_refused_before_compiling(tmp_path):
    model = build_tiny_model("float64")
    with torch.no_grad():
        model.readout.weight[0] = float("nan")
        model.per_type_energy_shifts[1] = float("inf")
    with pytest.raises(ValueError) as error:
        compile_model(model, tmp_path / "m.nequip.pth", mode="torchscript", example_data=example_frame())
    assert str(error.value) == (
        "the model's weights are not finite (NaN or infinite): readout.weight, per_type_energy_shifts; "
        "its every prediction would be NaN. Use a checkpoint saved before training diverged (e.g. best.ckpt), or "
        "retrain from finite data"
    )
    assert list(tmp_path.iterdir()) == []


def test_num_layers_below_one_is_refused_before_compiling(tmp_path):
    model = build_tiny_model("float64")
    model.metadata = lambda: {**type(model).metadata(model), "num_layers": "0"}
    with pytest.raises(MetadataError) as error:
        compile_model(model, tmp_path / "m.nequip.pth", mode="torchscript", example_data=example_frame())
    assert str(error.value) == "the model: metadata key 'num_layers' is malformed: expected a positive decimal integer, got '0'"
    assert list(tmp_path.iterdir()) == []


class DiffersWhenScripted(torch.nn.Module):
    """A model whose TorchScript version is wrong: what the compiled-file check must catch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def metadata(self):
        return self.model.metadata()

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = self.model(data)
        if torch.jit.is_scripting():
            out["forces"] = out["forces"] + 1e-6
        return out


def test_compiled_file_that_disagrees_with_the_eager_model_is_not_written(tmp_path):
    out = tmp_path / "m.nequip.pth"
    with pytest.raises(CompileError) as error:
        compile_model(DiffersWhenScripted(build_tiny_model("float64")), out, "torchscript", example_data=example_frame())
    assert str(error.value).startswith(
        "the compiled model disagrees with the eager model on 'forces': relative error "
    )
    assert list(tmp_path.iterdir()) == []  # neither the file nor its staging directory


class NaNVirialWhenScripted(DiffersWhenScripted):
    """Finite energy and forces, NaN virial, only in the compiled file."""

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = self.model(data)
        if torch.jit.is_scripting():
            out["virial"] = out["virial"] * float("nan")
        return out


def test_nan_in_the_compiled_output_is_a_mismatch(tmp_path):
    with pytest.raises(CompileError) as error:
        compile_model(NaNVirialWhenScripted(build_tiny_model("float64")), tmp_path / "m.nequip.pth", "torchscript", example_data=example_frame())
    assert str(error.value) == (
        "the compiled model disagrees with the eager model on 'virial': relative error inf "
        "(tolerance 1e-10), shape (1, 3, 3) (eager (1, 3, 3))"
    )
    assert list(tmp_path.iterdir()) == []


def test_molecule_as_example_data_compiles_without_its_stress(tmp_path):
    """The stress of a frame without a cell is NaN in the eager model and omitted by the runtime:
    the one output left out of the check."""
    molecule = example_frame()
    del molecule["cell"], molecule["edge_cell_shift"]
    molecule["edge_index"] = molecule["edge_index"][:, :0]
    out = compile_model(build_tiny_model("float64"), tmp_path / "m.nequip.pth", "torchscript", example_data=molecule)
    assert "stress" not in open_model(out)(molecule)
    assert "stress" in open_model(out)(example_frame())


def test_compiling_reports_progress_and_total_time(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nequip.compile"):
        compile_model(build_tiny_model("float64"), tmp_path / "m.nequip.pth", "torchscript")
    messages = [record.getMessage() for record in caplog.records]
    assert any("scripting the model" in m for m in messages)
    assert any("checking the compiled file against the eager model" in m for m in messages)
    assert any(f"wrote {tmp_path / 'm.nequip.pth'}" in m for m in messages)
    assert messages[-1].startswith("compiled in ") and messages[-1].endswith(" s")


# -- command line ---------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_refuses_missing_input(tmp_path, capsys):
    out = tmp_path / "m.nequip.pth"
    code, err = run_cli(capsys, tmp_path / "missing.nequip.zip", out, "--mode", "torchscript")
    assert code == 2
    assert err == f"nequip-compile: error: {tmp_path / 'missing.nequip.zip'}: no such file\n"
    assert not out.exists()


def test_cli_refuses_extension_mismatch_before_reading_the_input(tmp_path, capsys):
    out = tmp_path / "m.nequip.pth"
    code, err = run_cli(capsys, tmp_path / "missing.nequip.zip", out, "--mode", "aotinductor", "--target", "ase")
    assert code == 2
    assert err == (
        f"nequip-compile: error: output file '{out}' does not match mode aotinductor: "
        "its name must end in '.nequip.pt2'\n"
    )


def test_cli_refuses_unknown_target(tmp_path, capsys):
    code, err = run_cli(
        capsys, tmp_path / "in.nequip.zip", tmp_path / "m.nequip.pt2", "--mode", "aotinductor", "--target", "lmp"
    )
    assert code == 2
    assert err == "nequip-compile: error: unknown target 'lmp': expected one of ase, pair_nequip, pair_nequip_domain, batch\n"


def test_cli_compiles_what_the_loader_gives_it(tmp_path, capsys, monkeypatch):
    """The command line wiring, from a (stubbed) loaded model to a checked file on disk."""
    source = tmp_path / "in.nequip.zip"
    source.write_bytes(b"stub")
    monkeypatch.setattr(cli, "_load", lambda path: (build_tiny_model("float64"), example_frame()))
    out = tmp_path / "m.nequip.pth"
    code, err = run_cli(capsys, source, out, "--mode", "torchscript", "--device", "cpu")
    assert code == 0, err
    assert "nequip-compile: " in err and "compiled in" in err
    assert open_model(out).type_names == ("Si", "C")


def test_cli_checks_a_checkpoint_on_the_models_own_example_frame(tmp_path, capsys, monkeypatch):
    """From a checkpoint, the frame is the first frame of the training data its configuration
    names, not a synthetic one."""
    from ase.build import bulk

    from fixtures.model_files import write_checkpoint
    from nequip.data import TypeMapper, from_ase, read_frames

    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.rattle(0.1, seed=3)
    atoms.write(tmp_path / "train.xyz")
    source = write_checkpoint(build_tiny_model("float64"), tmp_path / "best.ckpt")
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["config"] = {"data": {"file": str(tmp_path / "train.xyz")}}
    torch.save(checkpoint, source)
    compiled_with = {}
    monkeypatch.setattr(cli, "compile_model", lambda model, out, **kwargs: compiled_with.update(kwargs))
    code, err = run_cli(capsys, source, tmp_path / "m.nequip.pth", "--mode", "torchscript")
    assert code == 0, err
    expected = from_ase(read_frames(tmp_path / "train.xyz")[0], TypeMapper(["Si", "C"]), 4.0, labels=())
    assert set(compiled_with["example_data"]) == set(expected)
    for key, value in expected.items():
        assert torch.equal(compiled_with["example_data"][key], value), key
    assert err == "nequip-compile: example frame: first frame of the training data file train.xyz\n"


def test_cli_reports_a_disagreeing_compiled_model_as_an_error(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.nequip.zip"
    source.write_bytes(b"stub")
    model = DiffersWhenScripted(build_tiny_model("float64"))
    monkeypatch.setattr(cli, "_load", lambda path: (model, example_frame()))
    code, err = run_cli(capsys, source, tmp_path / "m.nequip.pth", "--mode", "torchscript")
    assert code == 1
    assert "nequip-compile: error: the compiled model disagrees with the eager model on 'forces'" in err
    assert sorted(os.listdir(tmp_path)) == ["in.nequip.zip"]


# -- writes that fail -----------------------------------------------------------------------

# nequip-compile in a subprocess limited to 100 KiB files (ulimit -f), on the tiny model: its
# .nequip.pth is about 200 KiB.
_LIMITED_CLI = """
import sys
sys.path.insert(0, {tests!r})
from fixtures.compiled import build_tiny_model, example_frame
from nequip.scripts import compile as cli
cli._load = lambda path: (build_tiny_model("float64"), example_frame())
sys.exit(cli.main(sys.argv[1:]))
"""


def test_cli_reports_a_failed_write_and_leaves_nothing(tmp_path):
    """One message with the path and the OS error, no abort; and the staging directories of
    killed compiles go too (those of running ones stay)."""
    source, script = tmp_path / "in.nequip.zip", tmp_path / "limited_cli.py"
    source.write_bytes(b"stub")
    script.write_text(_LIMITED_CLI.format(tests=str(TESTS)))
    out = tmp_path / "out" / "m.nequip.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out.parent / f".nequip-compile-{int(dead.stdout)}-abc123"
    legacy = out.parent / ".nequip-compile-x7k2q9_a"  # named before staging names carried the PID
    live = out.parent / f".nequip-compile-{os.getpid()}-def456"
    for directory in (stale, legacy, live):
        directory.mkdir(parents=True)
        (directory / "m.nequip.pth").write_bytes(b"partial")

    command = f"ulimit -f 100; exec {sys.executable} {script} {source} {out} --mode torchscript"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == f"nequip-compile: error: cannot write {out}: File too large"
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr
    assert [p.name for p in out.parent.iterdir()] == [live.name]


@pytest.mark.slow
def test_cli_reports_a_failed_aotinductor_write_and_leaves_nothing(tmp_path):
    """The limit hits AOTInductor's own files first (its generated code, in its cache): one
    message too, and no output nor staging directory."""
    source, script = tmp_path / "in.nequip.zip", tmp_path / "limited_cli.py"
    source.write_bytes(b"stub")
    script.write_text(_LIMITED_CLI.format(tests=str(TESTS)))
    out = tmp_path / "out" / "m.nequip.pt2"
    out.parent.mkdir()
    # a cache of its own, so that inductor has everything to write
    environment = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor_cache"))
    command = f"ulimit -f 100; exec {sys.executable} {script} {source} {out} --mode aotinductor --target ase"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=environment)
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(r"nequip-compile: error: cannot write .+: File too large", result.stderr.splitlines()[-1])
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr
    assert list(out.parent.iterdir()) == []



@pytest.mark.slow
def test_cli_reports_a_compiler_that_cannot_write_in_one_line(tmp_path):
    """The C++ compiler's own writes failing (issue 33: a full disk, a 70-line traceback ending
    in g++'s error): one line naming the compiler's failed write and the way out, exit 1, and
    no output nor staging directory. The compiler is the real one, run with a file-size limit
    of 1 KB (its outputs fail to be written; inductor's own files, written before, do not)."""
    source, script = tmp_path / "in.nequip.zip", tmp_path / "limited_cli.py"
    source.write_bytes(b"stub")
    script.write_text(_LIMITED_CLI.format(tests=str(TESTS)))
    compiler = tmp_path / "limited_g++"
    # SIGXFSZ ignored (as Python ignores it, and a full disk sends none): the write fails, EFBIG
    compiler.write_text(f"#!/bin/sh\ntrap '' XFSZ\nulimit -f 1\nexec {shutil.which('g++')} \"$@\"\n")
    compiler.chmod(0o755)
    out = tmp_path / "out" / "m.nequip.pt2"
    out.parent.mkdir()
    cache = tmp_path / "inductor_cache"
    environment = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), CXX=str(compiler))
    command = [sys.executable, str(script), str(source), str(out), "--mode", "aotinductor", "--target", "ase"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        r"nequip-compile: error: cannot write AOTInductor's compiled code \(the C\+\+ compiler: .*File too large\): "
        r"free space on that disk, or set TMPDIR \(the compiler's temporary files\) and TORCHINDUCTOR_CACHE_DIR "
        rf"\(now {re.escape(str(cache))}\) to a disk with room",
        result.stderr.splitlines()[-1],
    ), result.stderr
    assert "Traceback" not in result.stderr and "Command:" not in result.stderr
    assert list(out.parent.iterdir()) == []


def test_cli_refuses_an_output_below_a_file_or_a_directory_before_reading_the_input(tmp_path, capsys):
    source = tmp_path / "in.nequip.zip"
    source.write_bytes(b"stub")  # not a package: reading it would fail differently
    out = source / "m.nequip.pth"
    code, err = run_cli(capsys, source, out, "--mode", "torchscript")
    assert (code, err) == (2, f"nequip-compile: error: cannot write {out}: {source} is not a directory\n")
    directory = tmp_path / "d.nequip.pth"
    directory.mkdir()
    code, err = run_cli(capsys, source, directory, "--mode", "torchscript")
    assert (code, err) == (2, f"nequip-compile: error: cannot write {directory}: it is a directory\n")


# -- loader (the C++ runtime behind a tensor interface) ----------------------------------------


def test_loader_reports_the_runtimes_refusal_of_a_missing_file(tmp_path):
    path = tmp_path / "missing.nequip.pt2"
    with pytest.raises(ModelFileError, match="^" + re.escape(f"{path}: no such file") + "$"):
        open_model(path)


@pytest.mark.slow
@pytest.mark.parametrize("key", [("float64", "torchscript", None), ("float64", "aotinductor", "ase")])
def test_loader_refuses_bad_inputs(key, loaded_models):
    compiled = loaded_models[key]
    frame = example_frame()
    with pytest.raises(KeyError, match="input 'pos' is missing"):
        compiled({name: value for name, value in frame.items() if name != "pos"})
    # checked by the runtime, like every input
    message = "atom_types values must lie in [0, num_types) = [0, 2), got values in [2, 2]"
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        compiled(dict(frame, atom_types=torch.full_like(frame["atom_types"], 2)))


@pytest.mark.slow
def test_loader_passes_inputs_an_aoti_model_would_misread_to_the_runtime(loaded_models, eager_outputs, systems):
    """float32 positions, int32 indices and non-contiguous tensors give the right answer."""
    compiled = loaded_models["float64", "aotinductor", "ase"]
    frame = systems["periodic_triclinic"]
    awkward = dict(frame)
    awkward["pos"] = frame["pos"].float().double().T.contiguous().T  # non-contiguous
    awkward["edge_index"] = frame["edge_index"].int()
    awkward["atom_types"] = frame["atom_types"].int()
    awkward["edge_cell_shift"] = frame["edge_cell_shift"].float()
    expected = compiled(dict(frame, pos=awkward["pos"].contiguous()))
    got = compiled(awkward)
    # the same inputs once converted: equal up to the rounding of the neighbor sums, whose
    # order the parallel scatter-add does not fix (a misread input is off by far more)
    for name in compiled.outputs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14)
