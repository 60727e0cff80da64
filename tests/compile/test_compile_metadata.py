"""Metadata of compiled files: every FILE_CONTRACT §2 key, in the documented format, readable
the way other readers read it; malformed or missing keys rejected with the file and key named."""

import zipfile

import pytest
import torch

from fixtures.compiled import COMPILED_KEYS, PER_EDGE_TYPE_CUTOFF, R_MAX, compiled_key_id
from nequip.compile import MetadataError, load_compiled, parse_metadata
from nequip.compile.contract import REQUIRED_KEYS, parse_aoti_fields, parse_torchscript_fields

GOOD = {"model_dtype": "float32", "type_names": "Si C", "num_types": "2", "r_max": "5.0", "allow_tf32": "0"}


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
    if dtype == "float32":
        cutoffs = [float(c) for c in metadata["per_edge_type_cutoff"].split(" ")]
        assert cutoffs == [c for row in PER_EDGE_TYPE_CUTOFF for c in row]
    else:
        assert "per_edge_type_cutoff" not in metadata
    assert metadata["nequip_version"] and metadata["torch_version"] == torch.__version__
    assert metadata["num_layers"] == "2"
    if mode == "aotinductor":
        assert metadata["nequip_aoti_inputs"] == "pos edge_index atom_types cell edge_cell_shift" + (
            " local_mask" if target == "pair_nequip_domain" else ""
        )
        assert metadata["nequip_aoti_outputs"] == {
            "ase": "atomic_energy total_energy forces stress",
            "pair_nequip": "atomic_energy forces virial",
            "pair_nequip_domain": "atomic_energy forces virial atom_virial",
        }[target]
        assert metadata["compile_target"] == target
        assert metadata["AOTI_DEVICE_KEY"] == "cpu"
    else:
        assert metadata["nequip_torchscript_inputs"] == "pos edge_index atom_types cell edge_cell_shift local_mask"
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


def _rewrite_torchscript(source, destination, key, value):
    """Copy a .pth, dropping the extra file ``key`` (value None) or replacing its content."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith(f"/extra/{key}"):
                if value is None:
                    continue
                dst.writestr(item, value)
            else:
                dst.writestr(item, src.read(item.filename))


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("r_max", None, "required metadata key 'r_max' is missing"),
        ("num_types", "3", "metadata key 'num_types' is malformed: expected the number of type names (2), got '3'"),
        ("model_dtype", "half", "metadata key 'model_dtype' is malformed: expected 'float32' or 'float64', got 'half'"),
    ],
)
def test_loader_names_file_and_key_of_bad_metadata(key, value, message, compiled_models, tmp_path):
    broken = tmp_path / "broken.nequip.pth"
    _rewrite_torchscript(compiled_models["float64", "torchscript", None], broken, key, value)
    with pytest.raises(MetadataError) as error:
        load_compiled(broken)
    assert str(error.value) == f"{broken}: {message}"


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_each_required_key_is_required(key):
    metadata = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(MetadataError, match=f"^model.nequip.pth: required metadata key '{key}' is missing$"):
        parse_metadata(metadata, "model.nequip.pth")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("model_dtype", "float16", "'float32' or 'float64'"),
        ("type_names", "Si  C", "type names joined by single spaces"),
        ("type_names", "Si Si", "distinct type names"),
        ("num_types", "two", "the number of type names (2)"),
        ("num_types", " 2", "the number of type names (2)"),
        ("r_max", "-1.0", "a positive decimal number"),
        ("r_max", "nan", "a positive decimal number"),
        ("allow_tf32", "true", "'0' or '1'"),
        ("per_edge_type_cutoff", "5.0 4.5 4.5", "2x2 = 4 space-separated numbers in (0, r_max = 5.0]"),
        ("per_edge_type_cutoff", "5.0 4.5 4.5 6.0", "2x2 = 4 space-separated numbers in (0, r_max = 5.0]"),
    ],
)
def test_malformed_metadata_is_refused_with_file_and_key(key, value, expected):
    with pytest.raises(MetadataError) as error:
        parse_metadata({**GOOD, key: value}, "model.nequip.pt2")
    assert str(error.value) == (
        f"model.nequip.pt2: metadata key '{key}' is malformed: expected {expected}, got {value!r}"
    )


def test_metadata_without_per_edge_type_cutoff_uses_r_max_for_every_pair():
    parsed = parse_metadata(GOOD, "model.nequip.pt2")
    assert parsed.per_edge_type_cutoff is None
    assert (parsed.type_names, parsed.num_types, parsed.r_max, parsed.allow_tf32) == (("Si", "C"), 2, 5.0, False)
    parsed = parse_metadata({**GOOD, "per_edge_type_cutoff": "5.0 4.5 4.5 4.0"}, "model.nequip.pt2")
    assert parsed.per_edge_type_cutoff == ((5.0, 4.5), (4.5, 4.0))


def test_aoti_files_without_interface_keys_use_the_pair_nequip_order():
    inputs, outputs = parse_aoti_fields(GOOD, "old.nequip.pt2")
    assert inputs == ("pos", "edge_index", "atom_types", "cell", "edge_cell_shift")
    assert outputs == ("atomic_energy", "forces", "virial")


def test_aoti_interface_keys_come_in_pairs_and_name_known_fields():
    with pytest.raises(MetadataError, match="^x.nequip.pt2: metadata key 'nequip_aoti_outputs' is missing"):
        parse_aoti_fields({**GOOD, "nequip_aoti_inputs": "pos edge_index atom_types cell edge_cell_shift"}, "x.nequip.pt2")
    with pytest.raises(MetadataError, match="^x.nequip.pt2: metadata key 'nequip_aoti_inputs' is malformed"):
        parse_aoti_fields(
            {**GOOD, "nequip_aoti_inputs": "pos edge_index atom_types", "nequip_aoti_outputs": "forces"}, "x.nequip.pt2"
        )
    with pytest.raises(MetadataError, match="^x.nequip.pt2: metadata key 'nequip_aoti_outputs' is malformed"):
        parse_aoti_fields(
            {
                **GOOD,
                "nequip_aoti_inputs": "pos edge_index atom_types cell edge_cell_shift",
                "nequip_aoti_outputs": "forces energy",
            },
            "x.nequip.pt2",
        )


def test_aoti_inputs_may_add_the_local_mask_and_nothing_else():
    outputs = "atomic_energy forces virial atom_virial"
    fields = "pos edge_index atom_types cell edge_cell_shift local_mask"
    inputs, parsed_outputs = parse_aoti_fields(
        {**GOOD, "nequip_aoti_inputs": fields, "nequip_aoti_outputs": outputs}, "x.nequip.pt2"
    )
    assert inputs[-1] == "local_mask" and parsed_outputs[-1] == "atom_virial"
    for bad in (fields + " batch", fields + " local_mask"):
        with pytest.raises(MetadataError, match="^x.nequip.pt2: metadata key 'nequip_aoti_inputs' is malformed"):
            parse_aoti_fields({**GOOD, "nequip_aoti_inputs": bad, "nequip_aoti_outputs": outputs}, "x.nequip.pt2")


def test_torchscript_files_without_interface_keys_take_and_give_the_contract_fields():
    inputs, outputs = parse_torchscript_fields(GOOD, "old.nequip.pth")
    assert inputs == ("pos", "edge_index", "atom_types", "cell", "edge_cell_shift")
    assert outputs == ("atomic_energy", "total_energy", "forces", "stress", "virial")
    with pytest.raises(MetadataError, match="^x.nequip.pth: metadata key 'nequip_torchscript_outputs' is malformed"):
        parse_torchscript_fields({**GOOD, "nequip_torchscript_outputs": "forces energy"}, "x.nequip.pth")


@pytest.mark.slow
def test_local_mask_is_refused_by_a_file_that_does_not_take_it(compiled_models, systems):
    compiled = load_compiled(compiled_models["float64", "aotinductor", "pair_nequip"])
    frame = dict(systems["periodic_triclinic"])
    frame["local_mask"] = torch.ones(frame["pos"].shape[0], dtype=torch.bool)
    with pytest.raises(ValueError, match="does not take input 'local_mask': compile it with --target pair_nequip_domain"):
        compiled(frame)
    domain = load_compiled(compiled_models["float64", "aotinductor", "pair_nequip_domain"])
    with pytest.raises(ValueError, match=r"input 'local_mask' must be a bool or integer tensor of shape \(N,\)"):
        domain(dict(frame, local_mask=torch.ones(3, dtype=torch.bool)))


@pytest.mark.slow
def test_loader_runs_a_file_without_interface_keys_in_pair_nequip_order(
    compiled_models, systems, eager_outputs, monkeypatch
):
    """Older producers wrote no nequip_aoti_inputs/outputs: the loader must assume pair_nequip."""
    from nequip.compile import aotinductor

    read_metadata = aotinductor.read_metadata

    def without_interface_keys(loaded):
        metadata = read_metadata(loaded)
        del metadata["nequip_aoti_inputs"], metadata["nequip_aoti_outputs"]
        return metadata

    monkeypatch.setattr(aotinductor, "read_metadata", without_interface_keys)
    compiled = load_compiled(compiled_models["float64", "aotinductor", "pair_nequip"])
    assert compiled.outputs == ("atomic_energy", "forces", "virial")
    got = compiled(systems["periodic_triclinic"])
    expected = eager_outputs["float64", "periodic_triclinic"]
    for name in compiled.outputs:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-10)
