"""Metadata of compiled files: every FILE_CONTRACT §2 key, in the documented format, readable
by the C++ runtime (the one reader) and the way other readers read it; the writer refuses,
before compiling, metadata that the reader would refuse."""

import re

import pytest
import torch

from fixtures.compiled import COMPILED_KEYS, PER_EDGE_TYPE_CUTOFF, R_MAX, compiled_key_id
from fixtures.edited_files import with_pth_metadata
from nequip._runtime import InputError, ModelFileError
from nequip.inference import open_model
from nequip.compile import MetadataError, check_model_metadata

REQUIRED_KEYS = ("model_dtype", "type_names", "num_types", "r_max", "allow_tf32")
GOOD = {
    "model_dtype": "float32",
    "type_names": "Si C",
    "num_types": "2",
    "r_max": "5.0",
    "allow_tf32": "0",
    "num_layers": "2",
}


@pytest.mark.slow
@pytest.mark.parametrize("key", COMPILED_KEYS, ids=compiled_key_id)
def test_compiled_file_carries_the_model_metadata_in_contract_format(key, compiled_models, loaded_models):
    dtype, mode, target = key
    metadata = loaded_models[key].metadata
    assert all(isinstance(value, str) and value.isascii() for value in metadata.values())
    # the model's metadata travels unchanged
    for name, value in compiled_models.eager[dtype].metadata().items():
        assert metadata[name] == value, name
    assert metadata["model_dtype"] == dtype
    assert metadata["type_names"] == "Si C"
    assert metadata["num_types"] == "2"
    assert float(metadata["r_max"]) == R_MAX
    assert metadata["allow_tf32"] == "0"
    assert metadata["compile_device"] == "cpu"
    if dtype == "float32":
        cutoffs = [float(c) for c in metadata["per_edge_type_cutoff"].split(" ")]
        assert cutoffs == [c for row in PER_EDGE_TYPE_CUTOFF for c in row]
    else:
        assert "per_edge_type_cutoff" not in metadata
    assert metadata["nequip_version"] and metadata["torch_version"] == torch.__version__
    assert metadata["num_layers"] == "2"
    if mode == "aotinductor":
        assert metadata["nequip_aoti_inputs"] == "pos edge_index atom_types cell edge_cell_shift" + (
            {"pair_nequip_domain": " local_mask", "batch": " batch num_atoms"}.get(target, "")
        )
        assert metadata["nequip_aoti_outputs"] == {
            "ase": "atomic_energy total_energy forces stress",
            "pair_nequip": "atomic_energy forces virial",
            "pair_nequip_domain": "atomic_energy forces virial atom_virial",
            "batch": "atomic_energy total_energy forces stress virial",
        }[target]
        assert metadata["compile_target"] == target
        assert metadata["AOTI_DEVICE_KEY"] == "cpu"
    else:
        assert metadata["nequip_torchscript_inputs"] == (
            "pos edge_index atom_types cell edge_cell_shift local_mask batch num_atoms"
        )
        assert metadata["nequip_torchscript_outputs"] == (
            "atomic_energy total_energy forces stress virial atom_virial"
        )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torchscript_metadata_is_one_extra_file_per_key(dtype, compiled_models):
    """As C++ and LAMMPS read it: torch.jit.load with _extra_files, one file per §2 key."""
    path = compiled_models[dtype, "torchscript", None]
    extra_files = dict.fromkeys(REQUIRED_KEYS + ("per_edge_type_cutoff",), "")
    torch.jit.load(str(path), _extra_files=extra_files)
    expected = compiled_models.eager[dtype].metadata()
    for name in REQUIRED_KEYS:
        assert extra_files[name].decode() == expected[name]
    assert int(extra_files["num_types"]) == 2 and int(extra_files["allow_tf32"]) == 0


@pytest.mark.slow
def test_loader_reports_the_runtimes_refusal_of_bad_metadata(compiled_models, tmp_path):
    broken = tmp_path / "broken.nequip.pth"
    with_pth_metadata(compiled_models["float64", "torchscript", None], broken, "r_max", None)
    with pytest.raises(ModelFileError, match="^" + re.escape(f"{broken}: required metadata key 'r_max' is missing") + "$"):
        open_model(broken)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_writer_requires_each_contract_key(key):
    metadata = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(MetadataError, match=f"^the model: required metadata key '{key}' is missing$"):
        check_model_metadata(metadata)


# The writer asks the reader (_runtime.check_metadata): its message, naming the model.
@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("model_dtype", "float16", "'float32' or 'float64'"),
        ("type_names", "Si  C", "names of visible ASCII characters joined by single spaces"),
        ("type_names", "Si C ", "names of visible ASCII characters joined by single spaces"),
        ("type_names", "Si Si", "distinct names ('Si' appears twice)"),
        ("num_types", "two", "a positive decimal integer"),
        ("num_types", "0", "a positive decimal integer"),
        ("r_max", "-1.0", "a positive decimal float"),
        ("r_max", "nan", "a positive decimal float"),
        ("r_max", "inf", "a positive decimal float"),
        ("r_max", "5_0", "a positive decimal float"),
        ("allow_tf32", "true", "'0' or '1'"),
        ("num_layers", "0", "a positive decimal integer"),
        ("num_layers", "-1", "a positive decimal integer"),
        ("per_edge_type_cutoff", "", "4 (num_types squared) floats in (0, r_max] joined by single spaces"),
        ("per_edge_type_cutoff", "5.0 4.5 4.5", "4 (num_types squared) floats in (0, r_max] joined by single spaces"),
        ("per_edge_type_cutoff", "5.0 4.5 4.5 6.0", "4 (num_types squared) floats in (0, r_max] joined by single spaces"),
        ("per_edge_type_cutoff", "5.0 4.5 4.5 0", "4 (num_types squared) floats in (0, r_max] joined by single spaces"),
    ],
)
def test_writer_refuses_metadata_the_reader_refuses(key, value, expected):
    with pytest.raises(MetadataError) as error:
        check_model_metadata({**GOOD, key: value})
    assert str(error.value) == f"the model: metadata key '{key}' is malformed: expected {expected}, got '{value}'"


def test_writer_refuses_a_number_of_types_other_than_the_names():
    with pytest.raises(MetadataError) as error:
        check_model_metadata({**GOOD, "num_types": "3"})
    message = "the model: metadata key 'type_names' is malformed: expected 3 names joined by single spaces (num_types), got 'Si C'"
    assert str(error.value) == message


@pytest.mark.parametrize("value", ["Si Č", "Si\tC", "Si\nC"])
def test_writer_refuses_metadata_that_is_not_printable_ascii(value):
    with pytest.raises(MetadataError) as error:
        check_model_metadata({**GOOD, "type_names": value})
    assert str(error.value) == f"the model: metadata key 'type_names' must be printable ASCII text, got {value!r}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, attribute, parsed",
    [
        ("r_max", "4", "r_max", 4.0),
        ("r_max", "4.0e0", "r_max", 4.0),
        ("per_edge_type_cutoff", "4 3.5 3.5 3", "per_edge_type_cutoff", ((4.0, 3.5), (3.5, 3.0))),
        ("per_edge_type_cutoff", "4.0 .35e1 3.5 3.0", "per_edge_type_cutoff", ((4.0, 3.5), (3.5, 3.0))),
        ("type_names", "Si_1 C-2", "type_names", ("Si_1", "C-2")),
    ],
)
def test_metadata_the_writer_accepts_the_reader_reads_alike(key, value, attribute, parsed, compiled_models, tmp_path):
    """The writer never writes what the reader refuses, and both read a value the same way."""
    check_model_metadata({**GOOD, "r_max": "4.0", key: value})
    path = with_pth_metadata(compiled_models["float64", "torchscript", None], tmp_path / "edited.nequip.pth", key, value)
    value = getattr(open_model(path), attribute)
    assert (tuple(map(tuple, value.tolist())) if attribute == "per_edge_type_cutoff" else value) == parsed


@pytest.mark.slow
def test_local_mask_is_refused_by_a_file_that_does_not_take_it(compiled_models, systems):
    path = compiled_models["float64", "aotinductor", "pair_nequip"]
    compiled = open_model(path)
    frame = dict(systems["periodic_triclinic"])
    frame["local_mask"] = torch.ones(frame["pos"].shape[0], dtype=torch.bool)
    with pytest.raises(InputError, match=re.escape(f"{path}: this model takes no local_mask")):
        compiled(frame)
    domain = open_model(compiled_models["float64", "aotinductor", "pair_nequip_domain"])
    num_atoms = frame["pos"].shape[0]
    with pytest.raises(InputError, match="^" + re.escape(f"local_mask must have shape (N,) = ({num_atoms},), got (3,)") + "$"):
        domain(dict(frame, local_mask=torch.ones(3, dtype=torch.bool)))
