"""Compiled files that call the runtime's message passing kernels (the default on a CPU) and
portable files (``portable=True``, torch operations only) compute what the eager model computes,
every target; the metadata names the operators a file calls, and a runtime without them refuses
the file before torch fails on it."""

import re
import zipfile

import pytest

from fixtures.edited_files import with_pt2_metadata, with_pth_metadata
from nequip._runtime import Model, ModelFileError
from nequip.compile import TOLERANCE, relative_error
from nequip.inference import open_model

TARGETS = ["ase", "pair_nequip", "pair_nequip_domain", "batch"]
KERNELS = "nequip::message_backward_v1 nequip::message_forward_v1"
# periodic and not, edgeless and large: each path of the kernels (centers without edges included)
SYSTEMS = ["periodic_triclinic", "molecule", "no_edges", "large_cell", "cell_smaller_than_cutoff"]


def graph_operators(path) -> set:
    """The nequip:: operators named in a .pt2's generated code (its custom-op records)."""
    with zipfile.ZipFile(path) as archive:
        text = " ".join(archive.read(name).decode() for name in archive.namelist() if name.endswith(".json"))
    return set(re.findall(r"nequip::message_[a-z_]+_v\d+", text))


def pth_operators(path) -> set:
    """The nequip:: operators named in a .pth's TorchScript code."""
    with zipfile.ZipFile(path) as archive:
        text = " ".join(archive.read(name).decode() for name in archive.namelist() if name.endswith(".py"))
    return {f"nequip::{name}" for name in re.findall(r"ops\.nequip\.(message_[a-z_]+_v\d+)", text)}


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS + [None], ids=TARGETS + ["torchscript"])
def test_kernel_file_equals_portable_file_equals_eager(target, compiled_models, systems, eager_outputs):
    mode = "aotinductor" if target else "torchscript"
    kernels = open_model(compiled_models["float64", mode, target])
    portable = open_model(compiled_models.portable["float64", target])
    for system in SYSTEMS:
        expected = eager_outputs["float64", system]
        got_kernels, got_portable = kernels(systems[system]), portable(systems[system])
        assert set(got_kernels) == set(got_portable)
        for name, value in got_kernels.items():
            for label, error in (
                ("kernel file vs eager", relative_error(value, expected[name])),
                ("portable file vs eager", relative_error(got_portable[name], expected[name])),
                ("kernel file vs portable file", relative_error(value, got_portable[name])),
            ):
                assert error <= TOLERANCE["float64"], f"{system}, {name}: relative error of {label} {error:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ase", "pair_nequip_domain"])
def test_the_metadata_names_the_operators_a_file_calls(target, compiled_models):
    kernels = compiled_models["float64", "aotinductor", target]
    portable = compiled_models.portable["float64", target]
    assert Model(str(kernels)).metadata["nequip_operators"] == KERNELS
    assert "nequip_operators" not in Model(str(portable)).metadata
    # the generated code calls exactly those (the domain file's parts too)
    assert graph_operators(kernels) == set(KERNELS.split())
    assert graph_operators(portable) == set()


@pytest.mark.slow
def test_a_torchscript_file_names_the_operator_it_calls(compiled_models):
    # its code calls the forward kernel; the derivatives are the kernels' autograd functions in C++
    kernels = compiled_models["float64", "torchscript", None]
    portable = compiled_models.portable["float64", None]
    assert Model(str(kernels)).metadata["nequip_operators"] == "nequip::message_forward_v1"
    assert "nequip_operators" not in Model(str(portable)).metadata
    assert pth_operators(kernels) == {"nequip::message_forward_v1"}
    assert pth_operators(portable) == set()


@pytest.mark.slow
def test_float32_files_call_the_kernels_too(compiled_models):
    assert Model(str(compiled_models["float32", "aotinductor", "pair_nequip"])).metadata["nequip_operators"] == KERNELS


@pytest.mark.slow
def test_a_runtime_without_an_operator_refuses_the_file(compiled_models, tmp_path):
    # as a file made by a later NequIP would be: an operator this runtime does not register
    source = compiled_models["float64", "aotinductor", "ase"]
    later = with_pt2_metadata(
        source, tmp_path / "later.nequip.pt2", "nequip_operators", "nequip::message_forward_v1 nequip::message_forward_v9"
    )
    message = (
        f"{later}: calls nequip::message_forward_v9 (metadata key nequip_operators), which this NequIP runtime "
        "does not provide: the file was made by a newer NequIP; run it with that version, or compile it again "
        "with nequip-compile --portable (a file any NequIP runtime can run)"
    )
    with pytest.raises(ModelFileError, match=re.escape(message)):
        Model(str(later))
    # a TorchScript file too, before torch's loader fails on the unknown operator
    later_pth = with_pth_metadata(
        compiled_models["float64", "torchscript", None], tmp_path / "later.nequip.pth", "nequip_operators",
        "nequip::message_forward_v9",
    )  # fmt: skip
    with pytest.raises(ModelFileError, match=re.escape(message.replace(str(later), str(later_pth)))):
        Model(str(later_pth))
    malformed = with_pt2_metadata(source, tmp_path / "malformed.nequip.pt2", "nequip_operators", "message_forward_v1")
    malformed_message = (
        f"{malformed}: metadata key 'nequip_operators' is malformed: expected operator names such as "
        "'nequip::message_forward_v1', got 'message_forward_v1'"
    )
    with pytest.raises(ModelFileError, match=re.escape(malformed_message)):
        Model(str(malformed))


def test_graphs_are_traced_by_one_of_two_backends():
    from nequip.compile import aotinductor

    with pytest.raises(ValueError, match="traced by the 'inductor' or 'cpu_kernels' backend, not 'torch'"):
        with aotinductor.traced_message_backend("torch"):
            pass
