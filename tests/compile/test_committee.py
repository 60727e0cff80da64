"""Committee files: K models compiled into one file give the mean and DeePMD-kit's deviations
of the K models evaluated one by one; models that cannot form a committee are refused."""

import re

import numpy as np
import pytest
import torch

from fixtures.compiled import COMMITTEE_SIZE, TINY_MODEL_CONFIGS, build_committee_members, build_tiny_model, example_frame
from nequip import _runtime
from nequip.compile import CompileError, compile_model
from nequip.data import keys
from nequip.inference import open_model
from nequip.inference.eager import EagerModel
from nequip.model import Committee, CommitteeError, NequIPModel
from nequip.scripts import compile as cli

from .systems import SYSTEMS

# (mode, target): a TorchScript file, and an AOTInductor file of the ase target
COMMITTEE_FILES = [("torchscript", None), ("aotinductor", "ase")]
CHECKED_SYSTEMS = ["periodic_triclinic", "molecule", "single_atom"]


def one_by_one(members, frame):
    """The members evaluated separately, stacked: energies (K,), atomic energies (K, N),
    forces (K, N, 3), virials (K, 3, 3) where the frame has a cell with a volume."""
    outs = [member(dict(frame)) for member in members]
    stacked = {
        "energy": np.array([float(out[keys.TOTAL_ENERGY]) for out in outs]),
        "atomic_energy": np.stack([out[keys.ATOMIC_ENERGY].detach().numpy().reshape(-1) for out in outs]),
        "forces": np.stack([out[keys.FORCES].detach().numpy() for out in outs]),
    }
    if keys.CELL in frame and float(torch.linalg.det(frame[keys.CELL].reshape(3, 3))) != 0.0:
        stacked["virial"] = np.stack([out[keys.VIRIAL].detach().numpy().reshape(3, 3) for out in outs])
    return stacked


def expected_committee(stacked, drive="mean"):
    """Mean (or first member's) results and DeePMD-kit's deviations (population standard
    deviations; per atom the norm of the standard deviation vector of the forces), in numpy."""
    pick = (lambda values: values[0]) if drive == "first" else (lambda values: values.mean(axis=0))
    expected = {
        keys.TOTAL_ENERGY: pick(stacked["energy"]),
        keys.ATOMIC_ENERGY: pick(stacked["atomic_energy"]),
        keys.FORCES: pick(stacked["forces"]),
        keys.FORCE_DEVIATION: np.linalg.norm(np.std(stacked["forces"], axis=0), axis=-1),
        keys.ENERGY_DEVIATION: np.std(stacked["energy"]),
    }
    if "virial" in stacked:
        expected[keys.VIRIAL] = pick(stacked["virial"])
        expected[keys.VIRIAL_DEVIATION] = np.std(stacked["virial"], axis=0)
    return expected


def assert_committee_outputs(out, expected, tolerance=1e-9):
    for name, value in expected.items():
        got = out[name].detach().numpy().reshape(np.shape(value))
        np.testing.assert_allclose(got, value, rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("mode, target", COMMITTEE_FILES, ids=["pth", "pt2-ase"])
@pytest.mark.parametrize("system", CHECKED_SYSTEMS)
def test_committee_file_gives_mean_and_deviations_of_its_models_one_by_one(committee_files, mode, target, system):
    frame = SYSTEMS[system]()
    expected = expected_committee(one_by_one(committee_files.members, frame))
    committee = open_model(committee_files[mode, target, "mean"])
    assert committee.committee_size == COMMITTEE_SIZE
    out = committee(frame)
    assert_committee_outputs(out, expected)
    if system != "single_atom":  # (whose energy is its type's shift, the same in every model)
        # the deviations are not trivially zero: the models differ
        assert expected[keys.FORCE_DEVIATION].max() > 1e-3
        assert expected[keys.ENERGY_DEVIATION] > 1e-3


@pytest.mark.parametrize("system", CHECKED_SYSTEMS)
def test_eager_committee_gives_mean_and_deviations_of_its_models_one_by_one(committee_files, system):
    frame = SYSTEMS[system]()
    expected = expected_committee(one_by_one(committee_files.members, frame))
    eager = EagerModel("committee", module=Committee(committee_files.members))
    assert eager.committee_size == COMMITTEE_SIZE
    assert_committee_outputs(eager(frame), expected)


@pytest.mark.slow  # compiles a layer-by-layer file (minutes)
@pytest.mark.parametrize("mode, target", [("torchscript", None), ("aotinductor", "pair_nequip_domain")],
                         ids=["pth", "pt2-pair_nequip_domain"])  # fmt: skip
def test_committee_layer_by_layer_gives_mean_and_deviations_of_its_models_one_by_one(committee_files, mode, target):
    """What LAMMPS runs on several ranks: each member layer by layer with its own exchanges,
    periodic images as ghosts; the deviations from the members' forces once the ghosts' are
    their atoms' (CompiledModel.call_exchanging, as pair_style nequip takes them)."""
    frame = SYSTEMS["periodic_triclinic"]()
    committee = open_model(committee_files[mode, target, "mean"])
    assert committee.exchanges_features
    members = [member.metadata()["layer_feature_widths"] for member in committee_files.members]
    assert committee.metadata["committee_layer_feature_widths"] == "; ".join(members)
    expected = expected_committee(one_by_one(committee_files.members, frame))
    assert_committee_outputs(committee.call_exchanging(frame), expected)


def test_committee_driven_by_its_first_model_gives_its_results_and_the_same_deviations(committee_files):
    frame = SYSTEMS["periodic_triclinic"]()
    expected = expected_committee(one_by_one(committee_files.members, frame), drive="first")
    path = committee_files["torchscript", None, "first"]
    assert_committee_outputs(open_model(path)(frame), expected)
    assert open_model(path).metadata["committee_drive"] == "first"


def test_committee_metadata_records_its_size_and_keeps_the_models_keys(committee_files):
    committee = open_model(committee_files["aotinductor", "ase", "mean"])
    single = build_tiny_model("float64").metadata()
    assert committee.metadata["committee_size"] == str(COMMITTEE_SIZE)
    assert committee.metadata["committee_drive"] == "mean"
    for key in ("type_names", "num_types", "r_max", "model_dtype", "num_layers"):
        assert committee.metadata[key] == single[key], key
    assert committee.outputs == ("atomic_energy", "total_energy", "forces", "stress") + keys.DEVIATION_KEYS
    # the runtime's reader of the metadata
    assert _runtime.read_metadata(str(committee_files["aotinductor", "ase", "mean"]))["committee_size"] == COMMITTEE_SIZE


def test_a_single_model_has_committee_size_one(compiled_models):
    model = open_model(compiled_models["float64", "torchscript", None])
    assert model.committee_size == 1
    assert keys.FORCE_DEVIATION not in model(compiled_models.example)


def test_compiler_check_covers_every_member(tmp_path):
    """A committee whose second model compiles wrong (forces off by 1e-6 once scripted) is not written."""
    from .test_compile_errors import DiffersWhenScripted

    first, second = build_committee_members()[:2]
    out = tmp_path / "committee.nequip.pth"
    with pytest.raises(CompileError, match="^the compiled model disagrees with the eager model on 'forces'"):
        compile_model(Committee([first, DiffersWhenScripted(second)]), out, "torchscript", example_data=example_frame())
    assert list(tmp_path.iterdir()) == []


# -- refused ------------------------------------------------------------------------------


def test_committee_of_one_model_is_refused():
    with pytest.raises(CommitteeError) as error:
        Committee([build_tiny_model("float64")])
    assert str(error.value) == (
        "a committee needs at least two models, got 1: give several models (independently trained) "
        "to compare, or compile the one model on its own"
    )


def _variant(**changes):
    return NequIPModel(**dict(TINY_MODEL_CONFIGS["float64"], **changes)).eval()


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(type_names=["Si", "O"]),
            "the models of a committee must have the same type names: b.nequip.zip has 'Si O', a.nequip.zip has 'Si C'",
        ),
        (
            dict(r_max=5.0),
            "the models of a committee must have the same cutoff r_max: b.nequip.zip has '5.0', a.nequip.zip has '4.0'",
        ),
        (
            dict(per_edge_type_cutoff=[[4.0, 3.5], [3.5, 3.0]]),
            "the models of a committee must have the same per-edge-type cutoffs: b.nequip.zip has "
            "'4.0 3.5 3.5 3.0', a.nequip.zip has none (r_max for every pair)",
        ),
        (
            dict(model_dtype="float32"),
            "the models of a committee must have the same model_dtype: b.nequip.zip has 'float32', "
            "a.nequip.zip has 'float64'",
        ),
    ],
    ids=["type_names", "r_max", "per_edge_type_cutoff", "model_dtype"],
)
def test_committee_of_different_models_is_refused_naming_the_difference(changes, message):
    with pytest.raises(CommitteeError, match="^" + re.escape(message) + "$"):
        Committee([build_tiny_model("float64"), _variant(**changes)], names=["a.nequip.zip", "b.nequip.zip"])


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_compiles_a_committee_of_the_models_it_is_given(tmp_path, capsys, monkeypatch):
    members = iter(build_committee_members())
    monkeypatch.setattr(cli, "_load", lambda path: (next(members), example_frame()))
    sources = [tmp_path / f"{name}.nequip.zip" for name in "abc"]
    out = tmp_path / "committee.nequip.pth"
    code, err = run_cli(capsys, *sources, out, "--mode", "torchscript", "--committee-drive", "first")
    assert code == 0, err
    committee = open_model(out)
    assert committee.committee_size == COMMITTEE_SIZE
    assert committee.metadata["committee_drive"] == "first"


def test_cli_refuses_models_that_differ_naming_the_files_and_writes_nothing(tmp_path, capsys, monkeypatch):
    members = iter([build_tiny_model("float64"), _variant(r_max=5.0)])
    monkeypatch.setattr(cli, "_load", lambda path: (next(members), example_frame()))
    code, err = run_cli(
        capsys, tmp_path / "a.nequip.zip", tmp_path / "b.nequip.zip", tmp_path / "c.nequip.pth", "--mode", "torchscript"
    )
    assert code == 2
    assert err == (
        f"nequip-compile: error: the models of a committee must have the same cutoff r_max: "
        f"{tmp_path / 'b.nequip.zip'} has '5.0', {tmp_path / 'a.nequip.zip'} has '4.0'\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "inputs, options, message",
    [
        (
            ["a", "b"],
            ["--mode", "aotinductor", "--target", "batch"],
            "a committee cannot be compiled for target batch: it takes one frame per call, which gives its "
            "deviations; compile it for target ase, pair_nequip, pair_nequip_domain",
        ),
        (
            ["a", "b"],
            ["--mode", "torchscript", "--committee-drive", "median"],
            "unknown committee drive 'median': expected one of mean, first",
        ),
        (
            ["a"],
            ["--mode", "torchscript", "--committee-drive", "first"],
            "a committee drive (--committee-drive) chooses among several models (a committee); got one model",
        ),
    ],
    ids=["domain_target", "unknown_drive", "drive_of_one_model"],
)
def test_cli_refuses_a_bad_committee_request_before_loading_any_model(tmp_path, capsys, inputs, options, message):
    """The input files do not exist: the request is refused before they are read."""
    extension = ".nequip.pt2" if "aotinductor" in options else ".nequip.pth"
    code, err = run_cli(capsys, *[tmp_path / f"{name}.nequip.zip" for name in inputs], tmp_path / f"c{extension}", *options)
    assert code == 2
    assert err == f"nequip-compile: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value, expected",
    [("1", "a decimal integer of at least 2"), ("two", "a decimal integer of at least 2")],
)
def test_runtime_refuses_a_malformed_committee_size(value, expected):
    metadata = dict(build_tiny_model("float64").metadata(), committee_size=value)
    with pytest.raises(_runtime.ModelFileError) as error:
        _runtime.check_metadata(metadata, "f.nequip.pth")
    assert str(error.value) == f"f.nequip.pth: metadata key 'committee_size' is malformed: expected {expected}, got '{value}'"


@pytest.mark.parametrize(
    "value", ["36 4", "36 4; 36 4; 36 4; 36 4", "36 4;36 4; 36 4", "36 0; 36 4; 36 4", "36 4; ; 36 4"]
)
def test_runtime_refuses_malformed_committee_layer_widths(value):
    metadata = dict(build_tiny_model("float64").metadata(), committee_size="3", committee_layer_feature_widths=value)
    with pytest.raises(_runtime.ModelFileError) as error:
        _runtime.check_metadata(metadata, "f.nequip.pth")
    assert str(error.value) == (
        "f.nequip.pth: metadata key 'committee_layer_feature_widths' is malformed: expected committee_size (3) "
        f"lists of positive decimal integers joined by single spaces, the lists joined by '; ', got '{value}'"
    )


def test_committee_file_evaluates_a_batch_one_frame_at_a_time_with_each_frames_deviations(committee_files):
    """A batch's outputs have no deviations: a committee .pth (which takes batch inputs) runs one frame a call."""
    frames = [SYSTEMS["periodic_triclinic"](), SYSTEMS["molecule"]()]
    committee = open_model(committee_files["torchscript", None, "mean"])
    assert not committee.takes_batches
    for frame, out in zip(frames, committee.evaluate(frames, batch_size=2)):
        assert_committee_outputs(out, expected_committee(one_by_one(committee_files.members, frame)))


def test_cli_refuses_a_torchscript_committee_of_packages_naming_the_way_out(tmp_path, capsys, model_files):
    # the real loader: two packages import their code under names of their own
    package = model_files["float64", "package"]
    out = tmp_path / "c.nequip.pth"
    code, err = run_cli(capsys, package, package, out, "--mode", "torchscript")
    assert code == 2
    assert err.splitlines()[-1] == (
        f"nequip-compile: error: 2 of the committee's models come from packages ({package}, {package}), whose "
        "code TorchScript cannot put in one .nequip.pth; compile the committee with --mode aotinductor "
        "(.nequip.pt2), or from the models' checkpoints (.ckpt)"
    )
    assert list(tmp_path.iterdir()) == []
