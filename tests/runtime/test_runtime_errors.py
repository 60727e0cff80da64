"""Every way of misusing the runtime gives one exception with one clear message: bad files,
missing or malformed metadata, wrong devices, a .pt2 for another CPU or torch, bad inputs,
and outputs that are not finite (overlapping atoms, a broken model)."""

import os
import re
import shutil
import warnings
import zipfile
from typing import Dict

import numpy as np
import pytest
import torch

from fixtures.edited_files import with_pt2_metadata, with_pth_metadata
from nequip._runtime import (
    DeviceError,
    Error,
    InputError,
    Model,
    ModelFileError,
    ModelFileWarning,
    NonFiniteOutputError,
    TorchError,
    cuda_device_count,
    parse_device,
    read_metadata,
    select_device,
)

PTH = ("float64", "torchscript", None)
PT2 = ("float64", "aotinductor", "pair_nequip")


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


# -- files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.nequip.pth"
    with raises(ModelFileError, f"{path}: no such file"):
        Model(str(path))


def test_unknown_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with raises(ModelFileError, f"{path}: unknown model file extension: expected .nequip.pth (TorchScript) or .nequip.pt2 (AOTInductor)"):
        Model(str(path))


@pytest.mark.parametrize("suffix", [".nequip.pth", ".nequip.pt2"])
def test_file_that_is_not_a_zip_archive(tmp_path, suffix):
    path = tmp_path / f"text{suffix}"
    path.write_text("r_max: 4.0\n")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        Model(str(path))


def test_zip_archive_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.nequip.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other/data.txt", "hello")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        Model(str(path))


def test_torchscript_file_named_pt2(compiled_models, tmp_path):
    path = tmp_path / "renamed.nequip.pt2"
    shutil.copy(compiled_models[PTH], path)
    message = f"{path}: the file name says an AOTInductor package (.nequip.pt2) but the file is a TorchScript archive (.nequip.pth)"
    with raises(ModelFileError, message):
        Model(str(path))


def test_aotinductor_file_named_pth(compiled_models, tmp_path):
    path = tmp_path / "renamed.nequip.pth"
    shutil.copy(compiled_models[PT2], path)
    message = f"{path}: the file name says a TorchScript archive (.nequip.pth) but the file is an AOTInductor package (.nequip.pt2)"
    with raises(ModelFileError, message):
        Model(str(path))


# -- metadata ------------------------------------------------------------------------------

REQUIRED_KEYS = ["model_dtype", "type_names", "num_types", "r_max", "allow_tf32"]
# FILE_CONTRACT §2 joins lists by single spaces; the reader splits on single spaces exactly.
TYPE_NAMES_FORM = "names of visible ASCII characters joined by single spaces"
CUTOFFS = "4 (num_types squared) floats in (0, r_max] joined by single spaces"
MALFORMED = [
    ("model_dtype", "float16", "'float32' or 'float64'"),
    ("num_types", "two", "a positive decimal integer"),
    ("num_types", "0", "a positive decimal integer"),
    ("type_names", "Si", "2 names joined by single spaces (num_types)"),
    ("type_names", "Si Si", "distinct names ('Si' appears twice)"),
    ("type_names", "Si  C", TYPE_NAMES_FORM),
    ("type_names", " Si C", TYPE_NAMES_FORM),
    ("type_names", "Si C ", TYPE_NAMES_FORM),
    ("type_names", "Si\tC", TYPE_NAMES_FORM),
    ("type_names", "Si C\n", TYPE_NAMES_FORM),
    ("type_names", "Si C\u00e9", TYPE_NAMES_FORM),
    ("r_max", "-1.0", "a positive decimal float"),
    ("r_max", "nan", "a positive decimal float"),
    ("per_edge_type_cutoff", "4.0 3.5 3.5", CUTOFFS),
    ("per_edge_type_cutoff", "4.0 3.5 3.5 4.5", CUTOFFS),
    ("per_edge_type_cutoff", "", CUTOFFS),
    ("per_edge_type_cutoff", "4.0  3.5 3.5 4.0", CUTOFFS),
    ("per_edge_type_cutoff", "4.0 3.5 3.5 \n4.0", CUTOFFS),
    ("allow_tf32", "yes", "'0' or '1'"),
    ("num_layers", "0", "a positive decimal integer"),
    ("num_layers", "-2", "a positive decimal integer"),
    ("closest_training_pair", "0", "a positive decimal float"),
    ("closest_training_pair", "1.2 Å", "a positive decimal float"),
    ("layer_rows", "all", "'selected'"),
]


def shown(value: str) -> str:
    """A metadata value as the runtime's messages quote it: tabs, newlines and bytes outside
    printable ASCII escaped."""
    escapes = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    return "".join(
        escapes.get(c) or (c if " " <= c <= "~" else "".join(f"\\x{b:02x}" for b in c.encode()))
        for c in value
    )


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_torchscript_without_a_required_key(compiled_models, tmp_path, key):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", key, None)
    with raises(ModelFileError, f"{path}: required metadata key '{key}' is missing"):
        Model(str(path))


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_aotinductor_without_a_required_key(compiled_models, tmp_path, key):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", key, None)
    with raises(ModelFileError, f"{path}: required metadata key '{key}' is missing"):
        Model(str(path))


@pytest.mark.parametrize("key, value, expected", MALFORMED)
def test_torchscript_with_a_malformed_key(compiled_models, tmp_path, key, value, expected):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", key, value)
    with raises(ModelFileError, f"{path}: metadata key '{key}' is malformed: expected {expected}, got '{shown(value)}'"):
        Model(str(path))


@pytest.mark.parametrize("key, value, expected", MALFORMED)
def test_aotinductor_with_a_malformed_key(compiled_models, tmp_path, key, value, expected):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", key, value)
    with raises(ModelFileError, f"{path}: metadata key '{key}' is malformed: expected {expected}, got '{shown(value)}'"):
        Model(str(path))


def test_aotinductor_with_unknown_output_names(compiled_models, tmp_path):
    value = "atomic_energy forces energy"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "nequip_aoti_outputs", value)
    message = (
        f"{path}: metadata key 'nequip_aoti_outputs' is malformed: expected distinct names from "
        f"'atomic_energy total_energy forces stress virial atom_virial force_deviation energy_deviation "
        f"virial_deviation' including 'atomic_energy forces', got '{value}'"
    )
    with raises(ModelFileError, message):
        Model(str(path))


def test_one_model_that_claims_to_be_a_committee_is_refused(compiled_models, tmp_path):
    """committee_size says the file gives deviations; its outputs say it does not."""
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", "committee_size", "2")
    message = (
        f"{path}: metadata keys 'committee_size' and 'nequip_torchscript_outputs' disagree: "
        "a committee of 2 models must return 'force_deviation'"
    )
    with raises(ModelFileError, message):
        Model(str(path))


def test_files_of_older_producers_use_the_pair_nequip_order(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "a.nequip.pt2", "nequip_aoti_outputs", None)
    path = with_pt2_metadata(path, tmp_path / "model.nequip.pt2", "nequip_aoti_inputs", None)
    assert Model(str(path)).output_names == ["atomic_energy", "forces", "virial"]


# -- devices -------------------------------------------------------------------------------


def test_aotinductor_compiled_for_another_device(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "AOTI_DEVICE_KEY", "cuda")
    with raises(DeviceError, f"{path}: compiled for device 'cuda', cannot run on device 'cpu'; compile it again for 'cpu' (nequip-compile ... --device cpu)"):
        Model(str(path), "cpu")


@pytest.mark.parametrize("fmt", [PTH, PT2])
def test_files_say_their_device_and_open_on_it_by_default(compiled_models, fmt):
    assert read_metadata(str(compiled_models[fmt]))["compiled_for"] == "cpu"
    assert Model(str(compiled_models[fmt])).device == "cpu"


def test_torchscript_compiled_for_another_device(compiled_models, tmp_path):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", "compile_device", "cuda")
    with raises(DeviceError, f"{path}: compiled for device 'cuda', cannot run on device 'cpu'; compile it again for 'cpu' (nequip-compile ... --device cpu)"):
        Model(str(path), "cpu")


def test_files_that_do_not_say_their_device_run_anywhere(compiled_models, tmp_path):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", "compile_device", None)
    assert read_metadata(str(path))["compiled_for"] is None
    assert Model(str(path)).device == "cpu"


def test_malformed_compile_device(compiled_models, tmp_path):
    path = with_pth_metadata(compiled_models[PTH], tmp_path / "model.nequip.pth", "compile_device", "gpu")
    with pytest.raises(ModelFileError, match=re.escape(f"{path}: metadata key 'compile_device' is malformed")):
        Model(str(path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_file_without_cuda_by_default(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "AOTI_DEVICE_KEY", "cuda")
    with raises(DeviceError, f"{path}: device 'cuda' requested but no CUDA device is visible to torch: use device 'cpu' (and a model compiled for it), or a CUDA build of torch on a machine with a GPU"):
        Model(str(path))


@pytest.mark.parametrize(
    "requested, compiled_for, local_rank, gpus, expected",
    [
        ("", "", 3, 0, "cpu"),  # a file that does not say: the CPU
        ("", "cpu", 3, 4, "cpu"),
        ("", "cuda", 0, 4, "cuda:0"),
        ("", "cuda", 5, 4, "cuda:1"),  # node-local rank 5 of a node with 4 GPUs
        ("cuda", "cuda", 2, 2, "cuda:0"),
        ("cuda", "cpu", 1, 2, "cuda:1"),  # asked for: the runtime then refuses a CPU file
        ("cuda:1", "cuda", 0, 2, "cuda:1"),  # an index given is kept
        ("cpu", "cuda", 7, 8, "cpu"),
    ],
)
def test_select_device(requested, compiled_for, local_rank, gpus, expected):
    assert select_device(requested, compiled_for, local_rank, gpus) == expected


def test_select_device_errors():
    with raises(DeviceError, "device 'cuda' requested but no CUDA device is visible to torch: use device 'cpu' (and a model compiled for it), or a CUDA build of torch on a machine with a GPU"):
        select_device("", "cuda", 0, 0)
    with raises(DeviceError, "invalid device 'gpu:0': expected 'cpu', 'cuda' or 'cuda:<index>'"):
        select_device("gpu:0", "cpu", 0, 1)


def test_cuda_device_count_is_torchs():
    assert cuda_device_count() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:1", "mps"])
def test_invalid_device(compiled_models, device):
    path = compiled_models[PTH]
    with raises(DeviceError, f"{path}: invalid device '{device}': expected 'cpu', 'cuda' or 'cuda:<index>'"):
        Model(str(path), device)


def test_cuda_device_that_does_not_exist(compiled_models):
    count = torch.cuda.device_count()
    device = f"cuda:{count}"
    if count == 0:
        message = (
            f"device '{device}' requested, but CUDA is not available to torch: "
            "use device 'cpu', or a CUDA build of torch on a machine with a GPU"
        )
    else:
        message = f"device '{device}' requested, but only {count} CUDA device(s) are visible: use one of them, or device 'cpu'"
    path = compiled_models[PTH]
    with raises(DeviceError, f"{path}: {message}"):
        Model(str(path), device)
    with raises(DeviceError, message):
        parse_device(device)


@pytest.mark.parametrize("name, parsed", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1")])
def test_parse_device_without_the_machine_checks_the_name_only(name, parsed):
    assert parse_device(name, on_this_machine=False) == parsed


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:1", "mps", ""])
@pytest.mark.parametrize("on_this_machine", [True, False])
def test_parse_device_refuses_a_malformed_name(name, on_this_machine):
    """The project's one parser of device names: the compiler, the eager front ends and
    pair_style nequip give this message."""
    with raises(DeviceError, f"invalid device '{name}': expected 'cpu', 'cuda' or 'cuda:<index>'"):
        parse_device(name, on_this_machine=on_this_machine)


def test_parse_device_gives_the_canonical_name_of_a_device_here():
    assert parse_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert parse_device("cuda") == "cuda:0"


# -- inputs --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["pth", "pt2"])
def model(request, compiled_models):
    return Model(str(compiled_models[{"pth": PTH, "pt2": PT2}[request.param]]))


def good_inputs():
    """Four atoms in a 5 Å cube, a few edges."""
    rng = np.random.default_rng(0)
    return dict(
        pos=rng.uniform(0.0, 5.0, (4, 3)),
        atom_types=np.array([0, 1, 0, 1]),
        edge_index=np.array([[0, 1, 2, 3], [1, 0, 3, 2]]),
        edge_cell_shift=np.zeros((4, 3)),
        cell=5.0 * np.eye(3),
    )


BAD_INPUTS = [
    ("pos", np.zeros((4, 2)), "pos must have shape (N, 3), got (4, 2)"),
    ("pos", np.full((4, 3), np.nan), "pos contains non-finite values (NaN or infinity)"),
    ("pos", np.zeros((4, 3), dtype=bool), "pos must be an array of float64, float32, int64 or int32, got bool"),
    ("atom_types", np.array([0, 1, 0]), "atom_types must have shape (N,) = (4,), got (3,)"),
    ("atom_types", np.array([0.0, 1.0, 0.0, 1.0]), "atom_types must have an integer dtype, got float64"),
    ("atom_types", np.array([0, 1, 0, 2]), "atom_types values must lie in [0, num_types) = [0, 2), got values in [0, 2]"),
    ("edge_index", np.zeros((3, 4), dtype=np.int64), "edge_index must have shape (2, E), got (3, 4)"),
    ("edge_index", np.array([[0, 1, 2, 3], [1, 0, 3, 4]]), "edge_index values must lie in [0, N) = [0, 4), got values in [0, 4]"),
    ("edge_index", np.array([[0, 1, 2, -3], [1, 0, 3, 2]]), "edge_index values must lie in [0, N) = [0, 4), got values in [-3, 3]"),
    ("edge_cell_shift", np.zeros((3, 3)), "edge_cell_shift must have shape (E, 3) = (4, 3), got (3, 3)"),
    ("cell", np.eye(3).reshape(9), "cell must have shape (3, 3) or (1, 3, 3), got (9,)"),
    ("cell", np.full((3, 3), np.inf), "cell contains non-finite values (NaN or infinity)"),
]


@pytest.mark.parametrize("name, value, message", BAD_INPUTS, ids=[m.split(" ")[0] + str(i) for i, (_, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input(model, name, value, message):
    inputs = good_inputs()
    inputs[name] = value
    with raises(InputError, message):
        model.compute(**inputs)


def test_no_atoms(model):
    with raises(InputError, "pos must hold at least one atom, got shape (0, 3)"):
        model.compute(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros((2, 0), dtype=np.int64))


def test_input_errors_are_value_errors_and_leave_the_model_usable(model):
    with pytest.raises(ValueError):
        model.compute(**dict(good_inputs(), pos=np.zeros((4, 2))))
    assert np.isfinite(model.compute(**good_inputs())["total_energy"])


# -- what a .pt2 needs of the machine ------------------------------------------------------


def test_aotinductor_for_vector_instructions_this_cpu_lacks(compiled_models, tmp_path):
    """torch records the kernels' vector ISA; a file edited to need instructions no CPU has (a
    fictitious AVX1024, beside AVX512 where this CPU lacks it) is refused before its native
    code is loaded, on any CPU."""
    capabilities = torch._C._cpu._get_cpu_capability()
    offered = [
        name
        for name, features in [
            ("AVX2", ["avx2", "fma3"]),
            ("AVX512", ["avx512_f", "avx512_dq", "avx512_vl", "avx512_bw", "fma3"]),
            ("AVX512_VNNI", ["avx512_vnni"]),
            ("AMX_TILE", ["amx_tile", "amx_bf16", "amx_int8"]),
        ]
        if all(capabilities[f] for f in features)
    ]
    isa = "AVX512 AVX1024"
    lacking = "AVX1024" if "AVX512" in offered else "AVX512 AVX1024"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "AOTI_CPU_ISA", isa)
    message = (
        f"{path}: compiled for CPUs with {isa} (metadata key AOTI_CPU_ISA), but this CPU lacks {lacking} "
        f"(it offers {' '.join(offered) or 'none of AVX2 AVX512'}): its native code cannot run here; compile it "
        f"again on this machine, or with ATEN_CPU_CAPABILITY={'avx2' if 'AVX2' in offered else 'default'} set for "
        "nequip-compile"
    )
    with raises(DeviceError, message):
        Model(str(path))


def test_aotinductor_with_the_isa_of_this_cpu_loads(compiled_models):
    """The fixture's file was compiled here: whatever ISA torch recorded, this CPU has it."""
    model = Model(str(compiled_models[PT2]))
    assert model.metadata["AOTI_CPU_ISA"] != ""
    assert model.warnings == []


def test_aotinductor_for_another_machine(compiled_models, tmp_path):
    machine = os.uname().machine
    other = "aarch64" if machine != "aarch64" else "x86_64"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "AOTI_MACHINE", other)
    with raises(DeviceError, f"{path}: compiled for {other} machines (metadata key AOTI_MACHINE), this one is {machine}; compile it again on this machine"):
        Model(str(path))


def running_torch() -> str:
    return torch.__version__.split("+")[0]


def test_aotinductor_of_another_torch_major_version(compiled_models, tmp_path):
    made_with = f"{int(running_torch().split('.')[0]) + 1}.0.0"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "torch_version", made_with)
    message = (
        f"{path}: made with torch {made_with} (metadata key torch_version), this runtime uses torch "
        f"{running_torch()}: an AOTInductor package of another major version of torch cannot run here; "
        f"compile it again with torch {running_torch()}"
    )
    with raises(ModelFileError, message):
        Model(str(path))


def test_aotinductor_of_another_torch_minor_version_warns_once(compiled_models, tmp_path):
    major, minor = running_torch().split(".")[:2]
    made_with = f"{major}.{int(minor) + 1}.0+cu128"
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "torch_version", made_with)
    message = (
        f"{path}: made with torch {made_with} (metadata key torch_version), this runtime uses torch "
        f"{running_torch()}: AOTInductor packages are not guaranteed to work across torch versions; "
        f"if results look wrong, compile it again with torch {running_torch()}"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Model(str(path))
    assert [(w.category, str(w.message)) for w in caught] == [(ModelFileWarning, message)]
    assert model.warnings == [message]
    assert np.isfinite(model.compute(**good_inputs())["total_energy"])


def test_aotinductor_with_a_malformed_torch_version(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "torch_version", "two")
    with raises(ModelFileError, f"{path}: metadata key 'torch_version' is malformed: expected a torch version such as '{running_torch()}', got 'two'"):
        Model(str(path))


def test_files_of_other_producers_without_torch_version_load_silently(compiled_models, tmp_path):
    path = with_pt2_metadata(compiled_models[PT2], tmp_path / "model.nequip.pt2", "torch_version", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Model(str(path)).warnings == []


# -- non-finite outputs --------------------------------------------------------------------


def test_overlapping_atoms_are_named_when_the_energy_is_not_finite(model):
    """Two atoms at the same position: the model's output is NaN, and the error names them."""
    pos = np.array([[1.0, 1.0, 1.0], [2.5, 1.0, 1.0], [2.5, 1.0, 1.0]])
    edge_index = np.array([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]])
    message = (
        f"{model.path}: the model gave a non-finite energy or forces (NaN or infinity): atoms 1 and 2 are "
        "0 Å apart (closer than 0.1 * r_max = 0.4 Å); overlapping atoms are the likely cause: check the structure"
    )
    with raises(NonFiniteOutputError, message):
        model.compute(pos, np.array([0, 1, 0]), edge_index, cell=5.0 * np.eye(3), edge_cell_shift=np.zeros((6, 3)))
    assert np.isfinite(model.compute(**good_inputs())["total_energy"])


def test_overlap_through_a_periodic_image_counts_the_shift(model):
    """pos[j] - pos[i] + shift . cell: atom 1 sits on the image of atom 0 one cell along x."""
    pos = np.array([[0.0, 1.0, 1.0], [5.0, 1.0, 1.0]])
    with pytest.raises(NonFiniteOutputError, match=re.escape(": atoms 0 and 1 are 0 Å apart (closer than")):
        model.compute(pos, np.array([0, 0]), np.array([[0, 1], [1, 0]]), np.array([[-1.0, 0, 0], [1.0, 0, 0]]), 5.0 * np.eye(3))


class NaNEnergy(torch.nn.Module):
    """A TorchScript model of another producer that returns NaN atomic energies."""

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        pos = data["pos"]
        atomic_energy = torch.full((pos.shape[0], 1), float("nan"), dtype=torch.float64)
        zeros = torch.zeros((1, 3, 3), dtype=torch.float64)
        return {
            "atomic_energy": atomic_energy,
            "total_energy": atomic_energy.sum().reshape(1, 1),
            "forces": torch.zeros_like(pos),
            "stress": zeros,
            "virial": zeros,
        }


def test_non_finite_output_for_finite_inputs_points_at_the_file(tmp_path):
    path = tmp_path / "nan.nequip.pth"
    metadata = {"model_dtype": "float64", "type_names": "Si C", "num_types": "2", "r_max": "4.0", "allow_tf32": "0"}
    torch.jit.save(torch.jit.script(NaNEnergy()), str(path), _extra_files={k: v.encode() for k, v in metadata.items()})
    model = Model(str(path))
    message = (
        f"{path}: the model gave a non-finite energy or forces (NaN or infinity) for finite inputs "
        "(the closest two atoms are 1.5 Å apart); its weights may be non-finite: check the file"
    )
    pos = np.array([[1.0, 1.0, 1.0], [2.5, 1.0, 1.0]])
    with raises(NonFiniteOutputError, message):
        model.compute(pos, np.array([0, 1]), np.array([[0, 1], [1, 0]]))
    no_edges = (
        f"{path}: the model gave a non-finite energy or forces (NaN or infinity) for finite inputs "
        "(no two atoms are within the cutoff); its weights may be non-finite: check the file"
    )
    with raises(NonFiniteOutputError, no_edges):
        model.compute(pos, np.array([0, 1]), np.zeros((2, 0), dtype=np.int64))


def test_every_runtime_error_is_an_error_and_bad_arguments_are_value_errors():
    for error in (TorchError, ModelFileError, DeviceError, InputError, NonFiniteOutputError):
        assert issubclass(error, Error) and issubclass(error, RuntimeError)
    for error in (ModelFileError, DeviceError, InputError):
        assert issubclass(error, ValueError)
    assert not issubclass(NonFiniteOutputError, ValueError)
    assert issubclass(ModelFileWarning, UserWarning)


# -- metadata without the model ------------------------------------------------------------


@pytest.mark.parametrize("key", [PTH, ("float32", "aotinductor", "pair_nequip")])
def test_read_metadata_gives_what_the_loaded_model_gives(compiled_models, key):
    from nequip._runtime import read_metadata

    path = str(compiled_models[key])
    metadata, model = read_metadata(path), Model(path)
    assert metadata["type_names"] == list(model.type_names)
    assert metadata["r_max"] == model.r_max and metadata["num_types"] == model.num_types
    assert metadata["model_dtype"] == model.model_dtype and metadata["num_layers"] == model.num_layers
    assert metadata["raw"] == model.metadata
    expected_cutoffs = model.per_edge_type_cutoff
    if expected_cutoffs is None:
        assert metadata["per_edge_type_cutoff"] is None
    else:
        assert metadata["per_edge_type_cutoff"] == expected_cutoffs.ravel().tolist()


def test_read_metadata_refuses_what_loading_refuses(tmp_path):
    from nequip._runtime import read_metadata

    path = tmp_path / "not_a_model.nequip.pt2"
    path.write_text("hello")
    with raises(ModelFileError, f"{path}: not a compiled NequIP model (neither a TorchScript archive nor an AOTInductor package)"):
        read_metadata(str(path))
