"""Bad requests to the compiler, the command line and the loader: one clear message each,
refused before any work, and no output file left behind."""

import logging
import os
from typing import Dict

import pytest
import torch

from fixtures.compiled import build_tiny_model, example_frame
from nequip.compile import CompileError, MetadataError, compile_model, load_compiled
from nequip.scripts import compile as cli

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
        ("model.nequip.pt2", "aotinductor", "gromacs", "unknown target 'gromacs': expected one of ase, pair_nequip, pair_nequip_domain"),
        (
            "model.nequip.pt2",
            "aotinductor",
            None,
            "mode aotinductor needs a target (the order of the flat inputs and outputs): one of ase, pair_nequip, pair_nequip_domain",
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
    with pytest.raises(ValueError, match="^unknown device 'tpu': expected one of cpu, cuda$"):
        compile_model(NOT_A_MODEL, tmp_path / "m.nequip.pth", mode="torchscript", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="^device 'cuda' requested, but CUDA is not available to this torch"):
        compile_model(NOT_A_MODEL, tmp_path / "m.nequip.pt2", mode="aotinductor", device="cuda", target="ase")
    assert list(tmp_path.iterdir()) == []


def test_model_with_malformed_metadata_is_refused(tmp_path):
    model = build_tiny_model("float64")
    model.metadata = lambda: {**type(model).metadata(model), "r_max": "four"}
    with pytest.raises(MetadataError) as error:
        compile_model(model, tmp_path / "m.nequip.pth", mode="torchscript", example_data=example_frame())
    assert str(error.value) == "the model: metadata key 'r_max' is malformed: expected a positive decimal number, got 'four'"
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
    assert err == f"nequip-compile: error: input file '{tmp_path / 'missing.nequip.zip'}' does not exist\n"
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
    assert err == "nequip-compile: error: unknown target 'lmp': expected one of ase, pair_nequip, pair_nequip_domain\n"


def test_cli_compiles_what_the_loader_gives_it(tmp_path, capsys, monkeypatch):
    """The command line wiring, from a (stubbed) loaded model to a checked file on disk."""
    source = tmp_path / "in.nequip.zip"
    source.write_bytes(b"stub")
    monkeypatch.setattr(cli, "_load", lambda path: (build_tiny_model("float64"), example_frame()))
    out = tmp_path / "m.nequip.pth"
    code, err = run_cli(capsys, source, out, "--mode", "torchscript", "--device", "cpu")
    assert code == 0, err
    assert "nequip-compile: " in err and "compiled in" in err
    assert load_compiled(out).type_names == ("Si", "C")


def test_cli_reports_a_disagreeing_compiled_model_as_an_error(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.nequip.zip"
    source.write_bytes(b"stub")
    model = DiffersWhenScripted(build_tiny_model("float64"))
    monkeypatch.setattr(cli, "_load", lambda path: (model, example_frame()))
    code, err = run_cli(capsys, source, tmp_path / "m.nequip.pth", "--mode", "torchscript")
    assert code == 1
    assert "nequip-compile: error: the compiled model disagrees with the eager model on 'forces'" in err
    assert sorted(os.listdir(tmp_path)) == ["in.nequip.zip"]


# -- loader -----------------------------------------------------------------------------------


def test_loader_refuses_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"model\.pt: not a compiled model: expected a file name ending in '\.nequip\.pth' or '\.nequip\.pt2'"):
        load_compiled(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.nequip\.pt2: no such compiled model file"):
        load_compiled(tmp_path / "missing.nequip.pt2")


@pytest.mark.slow
@pytest.mark.parametrize("key", [("float64", "torchscript", None), ("float64", "aotinductor", "ase")])
def test_loader_refuses_bad_inputs(key, loaded_models):
    compiled = loaded_models[key]
    frame = example_frame()

    def refused(change, error, message):
        data = dict(frame)
        change(data)
        with pytest.raises(error) as raised:
            compiled(data)
        assert str(raised.value).strip("'\"") == message

    refused(lambda d: d.pop("pos"), KeyError, "input 'pos' is missing")
    refused(
        lambda d: d.update(atom_types=torch.full_like(d["atom_types"], 2)),
        ValueError,
        "input 'atom_types' must hold type indices 0..1 (Si C), got values in 2..2",
    )
    refused(
        lambda d: d.update(atom_types=d["atom_types"].double()),
        TypeError,
        "input 'atom_types' must be an integer tensor, got torch.float64",
    )
    refused(
        lambda d: d.update(pos=d["pos"][:0], atom_types=d["atom_types"][:0]),
        ValueError,
        "input 'pos' must have shape (N, 3) with N >= 1, got (0, 3)",
    )
    refused(
        lambda d: d.update(edge_index=d["edge_index"] + 100),
        ValueError,
        "input 'edge_index' must hold atom indices 0..7",
    )
    refused(
        lambda d: d.pop("edge_cell_shift"),
        KeyError,
        "inputs 'cell' and 'edge_cell_shift' must be given together, or neither",
    )


@pytest.mark.slow
def test_loader_prepares_inputs_an_aoti_model_would_misread(loaded_models, eager_outputs, systems):
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
    # the same inputs once converted: equal up to the rounding of the neighbour sums, whose
    # order the parallel scatter-add does not fix (a misread input is off by far more)
    for name in compiled.outputs:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14)
