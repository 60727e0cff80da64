"""Packages made by the other NequIP release (nequip 0.19.1) read through our one loader:
their metadata as text, their model from its own code behind our eager interface, giving that
release's own predictions; and their refusals (missing modules, unknown format ids)."""

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.io import write
from ase.calculators.singlepoint import SinglePointCalculator

from fixtures.foreign_packages import FRAME_NAMES, TOLERANCE, relative_error
from nequip.ase import NequIPCalculator
from nequip.data import TypeMapper, batch_frames, from_ase
from nequip.load import ModelFileError, PackageError, load_model, read_package_metadata
from nequip.package import build_package, load_example_data
from nequip.scripts.package import main as nequip_package

DTYPES = ("float64", "float32")


def rewritten(source: Path, target: Path, replace: dict) -> Path:
    """A copy of the zip ``source`` at ``target``, entries below its top folder replaced
    (``{entry: bytes}``; None removes it; an entry it lacks is added)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        top = old.namelist()[0].partition("/")[0]
        for info in old.infolist():
            entry = info.filename.partition("/")[2]
            if entry in replace:
                if replace[entry] is not None:
                    new.writestr(info, replace[entry])
            else:
                new.writestr(info, old.read(info))
        for entry, data in replace.items():
            if data is not None and f"{top}/{entry}" not in old.namelist():
                new.writestr(f"{top}/{entry}", data)
    return target


def stored_text(path: Path, entry: str) -> str:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.partition("/")[2] == entry]
        return archive.read(name).decode()


@pytest.fixture(scope="module")
def models(foreign):
    return {dtype: load_model(foreign.package(dtype)) for dtype in DTYPES}


def frame_of(model, atoms):
    cutoffs = model.config["per_edge_type_cutoff"]
    matrix = None if cutoffs is None else np.reshape(cutoffs, (2, 2))
    return from_ase(atoms, TypeMapper(model.type_names), model.r_max, per_edge_type_cutoff=matrix, labels=())


# --- metadata ------------------------------------------------------------------------------


def test_info_prints_their_metadata_as_stored_without_unpickling(foreign, capsys, monkeypatch):
    path = foreign.package("float64")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("info unpickled something")

    monkeypatch.setattr(torch.package.PackageImporter, "__init__", no_unpickling)
    assert nequip_package(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"# {path}\n# a package of nequip 0.19.1 (the other NequIP release's format, package_version_id 2): its "
        "metadata as stored, with type_names and model_variants added\n"
    )
    shown = yaml.safe_load(out)
    stored = yaml.safe_load(stored_text(path, "model/package_metadata.txt"))
    assert shown == {**stored, "type_names": ["Cu", "Au"], "model_variants": ["default"]}
    assert shown["versions"]["nequip"] == "0.19.1" and shown["package_version_id"] == 2


def test_list_shows_their_entries(foreign, capsys):
    assert nequip_package(["list", str(foreign.package("float32"))]) == 0
    out = capsys.readouterr().out
    for entry in ("model/package_metadata.txt", "model/eager_model.pkl", "model/example_data.pkl", "nequip/nn/graph_model.py"):
        assert f"cuau_float32.nequip/{entry}\n" in out


# --- the model ------------------------------------------------------------------------------


def test_their_model_runs_from_its_own_interned_code(models):
    model = models["float64"]
    assert type(model).__name__ == "EcosystemModel"
    assert type(model.graph_model).__module__.startswith("<torch_package_")
    assert type(model.graph_model).__module__.endswith(".nequip.nn.graph_model")


def test_their_model_states_our_metadata(models):
    assert models["float64"].metadata() == {
        "model_dtype": "float64",
        "type_names": "Cu Au",
        "num_types": "2",
        "r_max": "4.0",
        "allow_tf32": "0",
        "nequip_version": models["float64"].metadata()["nequip_version"],
        "model_made_by": "nequip 0.19.1",
        "num_layers": "2",
        # node features out of each layer: 4x0e+4x1o (what scalars times l <= 1 harmonics reach), then 4x0e
        "layer_feature_widths": "16 4",
        # layer(..., rows): the layer parts give the rows the runtime asks for
        "layer_rows": "selected",
    }
    metadata = models["float32"].metadata()
    assert metadata["model_dtype"] == "float32"
    assert metadata["per_edge_type_cutoff"] == "3.5 3.5 3.5 4.0"
    assert models["float32"].type_names == ["Cu", "Au"] and models["float32"].r_max == 4.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FRAME_NAMES)
def test_eager_model_gives_their_predictions(foreign, models, dtype, name):
    expected = foreign.frame(dtype, name)
    model = models[dtype]
    out = model(frame_of(model, expected.atoms))
    tolerance = TOLERANCE[dtype]
    for key, value in (("total_energy", expected.total_energy), ("atomic_energy", expected.atomic_energy),
                       ("forces", expected.forces), ("virial", expected.virial)):  # fmt: skip
        assert out[key].dtype == torch.float64
        assert relative_error(out[key].detach().numpy().reshape(np.shape(value)), value) < tolerance, key
    if expected.stress is None:
        assert torch.isnan(out["stress"]).all()
    else:
        assert relative_error(out["stress"].detach().numpy()[0], expected.stress) < tolerance


def test_a_batch_gives_each_frame_its_own_predictions(foreign, models):
    model = models["float64"]
    expected = [foreign.frame("float64", name) for name in ("bulk", "cluster", "triclinic")]
    out = model(batch_frames([frame_of(model, frame.atoms) for frame in expected]))
    np.testing.assert_allclose(out["total_energy"].detach().numpy().ravel(), [f.total_energy for f in expected], rtol=1e-12)
    np.testing.assert_allclose(out["forces"].detach().numpy(), np.concatenate([f.forces for f in expected]), atol=1e-12)


def test_the_example_frame_is_theirs(foreign):
    frame = load_example_data(foreign.package("float32"))
    assert set(frame) == {"pos", "atom_types", "edge_index", "cell", "edge_cell_shift", "pbc"}
    assert frame["pos"].dtype == torch.float64 and frame["cell"].shape == (1, 3, 3)
    assert frame["edge_index"].shape[1] == frame["edge_cell_shift"].shape[0] > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_calculator_gives_their_predictions(foreign, dtype):
    calculator = NequIPCalculator(foreign.package(dtype))
    for name in ("bulk", "triclinic", "cluster"):
        expected = foreign.frame(dtype, name)
        atoms = expected.atoms.copy()
        atoms.calc = calculator
        tolerance = TOLERANCE[dtype]
        assert relative_error(atoms.get_potential_energy(), expected.total_energy) < tolerance
        assert relative_error(atoms.get_potential_energies(), expected.atomic_energy) < tolerance
        assert relative_error(atoms.get_forces(), expected.forces) < tolerance
        if expected.stress is not None:
            assert relative_error(atoms.get_stress(voigt=False), expected.stress) < tolerance


def labelled(foreign, dtype, path: Path) -> Path:
    """The frames with the other release's predictions as labels, at full precision (ASE trajectory)."""
    frames = []
    for name in FRAME_NAMES:
        expected = foreign.frame(dtype, name)
        atoms = expected.atoms.copy()
        labels = dict(energy=expected.total_energy, forces=expected.forces)
        if expected.stress is not None:
            labels["stress"] = expected.stress.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    write(path, frames, format="traj")
    return path


def test_nequip_test_finds_their_predictions(foreign, tmp_path):
    data = labelled(foreign, "float64", tmp_path / "theirs.traj")
    result = subprocess.run(
        [sys.executable, "-m", "nequip.scripts.evaluate", str(foreign.package("float64")), str(data), "--index", "0:2",
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    frames = [foreign.frame("float64", name) for name in FRAME_NAMES[:2]]
    forces = np.concatenate([frame.forces for frame in frames])
    assert metrics["forces"]["count"] == forces.size
    assert metrics["forces"]["mae"] < 1e-6 * np.abs(forces).max()
    assert metrics["energy_per_atom"]["mae"] < 1e-6 * abs(frames[0].total_energy / len(frames[0].atoms))
    assert metrics["stress"]["mae"] < 1e-6 * max(np.abs(frame.stress).max() for frame in frames)


# --- re-packaging ---------------------------------------------------------------------------


def test_repackaging_keeps_their_format_their_code_and_their_predictions(foreign, tmp_path):
    source = foreign.package("float32")
    output = tmp_path / "again.nequip.zip"
    metadata = build_package(source, output)
    assert metadata == read_package_metadata(source)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(output) as new:
        code = {n.partition("/")[2]: old.read(n) for n in old.namelist() if n.partition("/")[2].startswith(("nequip/", "e3nn/"))}
        again = {n.partition("/")[2]: new.read(n) for n in new.namelist() if n.partition("/")[2].startswith(("nequip/", "e3nn/"))}
        assert code and again == code
    assert stored_text(output, "model/config.yaml") == stored_text(source, "model/config.yaml")
    expected = foreign.frame("float32", "bulk")
    model = load_model(output)
    out = model(frame_of(model, expected.atoms))
    assert relative_error(out["forces"].detach().numpy(), expected.forces) < TOLERANCE["float32"]


# --- refusals -------------------------------------------------------------------------------


def test_a_missing_extern_module_is_named_with_its_recorded_version(foreign, tmp_path):
    source = foreign.package("float64")
    metadata = yaml.safe_load(stored_text(source, "model/package_metadata.txt"))
    metadata["external_modules"]["cuequivariance_torch"] = "0.6.1"
    path = rewritten(source, tmp_path / "cueq.nequip.zip", {
        "model/package_metadata.txt": yaml.safe_dump(metadata).encode(),
        ".data/extern_modules": (stored_text(source, ".data/extern_modules") + "cuequivariance_torch\n").encode(),
    })  # fmt: skip
    with pytest.raises(PackageError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path}: the package's code needs cuequivariance_torch 0.6.1 (the version it was made with), not installed "
        "here: install it to load this package"
    )


def test_an_older_extern_module_than_recorded_is_named_in_a_warning(foreign, tmp_path):
    source = foreign.package("float64")
    metadata = yaml.safe_load(stored_text(source, "model/package_metadata.txt"))
    metadata["external_modules"]["opt_einsum_fx"] = "99.0"
    path = rewritten(source, tmp_path / "newer.nequip.zip", {"model/package_metadata.txt": yaml.safe_dump(metadata).encode()})
    with pytest.warns(UserWarning, match=r"the package was made with opt_einsum_fx 99\.0 and this environment has 0\."):
        load_model(path)


def test_an_unknown_package_version_id_is_refused(foreign, tmp_path):
    source = foreign.package("float64")
    text = stored_text(source, "model/package_metadata.txt").replace("package_version_id: 2", "package_version_id: 3")
    path = rewritten(source, tmp_path / "future.nequip.zip", {"model/package_metadata.txt": text.encode()})
    with pytest.raises(PackageError) as error:
        read_package_metadata(path)
    assert str(error.value) == (
        f"{path}: a package of another NequIP release with package_version_id 3, which this nequip does not read "
        "(it reads package_version_id 1 and 2, written by nequip 0.10 to 0.19); open it with the release that wrote "
        "it and compile it there, or re-package it with nequip 0.19"
    )


def test_a_package_with_pickled_metadata_is_refused(foreign, tmp_path):
    source = foreign.package("float64")
    path = rewritten(source, tmp_path / "old.nequip.zip", {
        "model/package_metadata.txt": None, "model/package_metadata.pkl": b"\x80\x03}q\x00.",
    })  # fmt: skip
    with pytest.raises(PackageError, match=r"package_version_id 0, metadata pickled in 'model/package_metadata.pkl'"):
        load_model(path)


def test_metadata_without_atom_types_is_damaged(foreign, tmp_path):
    source = foreign.package("float64")
    metadata = yaml.safe_load(stored_text(source, "model/package_metadata.txt"))
    del metadata["atom_types"]
    path = rewritten(source, tmp_path / "damaged.nequip.zip", {"model/package_metadata.txt": yaml.safe_dump(metadata).encode()})
    with pytest.raises(PackageError) as error:
        read_package_metadata(path)
    assert str(error.value) == f"{path}: damaged package: 'model/package_metadata.txt' lacks the key(s) atom_types"


def test_a_variant_other_than_default_is_refused(foreign):
    from nequip.load import ModelFromPackage

    path = foreign.package("float64")
    with pytest.raises(PackageError) as error:
        ModelFromPackage(path, "compile")
    assert str(error.value) == f"{path}: no model variant 'compile' in the package; it has: default"


def test_their_package_with_non_finite_weights_is_refused_like_ours(foreign, tmp_path):
    source = foreign.package("float64")
    name = "graph_model.model.func.layer1_convnet.conv.sc.weight"
    weight = load_model(source).get_parameter(name).detach().numpy()
    # the tensor's stored bytes (torch.package keeps each storage as an entry .data/<n>.storage)
    with zipfile.ZipFile(source) as archive:
        stored = {
            entry.partition("/")[2]: np.full_like(weight, np.nan).tobytes()
            for entry in archive.namelist()
            if entry.endswith(".storage") and archive.read(entry) == weight.tobytes()
        }
    assert stored
    path = rewritten(source, tmp_path / "diverged.nequip.zip", stored)
    with pytest.raises(ModelFileError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path}: the model's weights are not finite (NaN or infinite): {name}; its every prediction would be NaN. "
        "Use a checkpoint saved before training diverged (e.g. best.ckpt), or retrain from finite data"
    )


def test_a_model_that_cannot_be_split_is_refused_for_the_domain_target_naming_the_targets_that_work(foreign, tmp_path):
    from nequip.compile import compile_model
    from nequip.ecosystem.model import layer_split_problem

    model = load_model(foreign.package("float64"))
    # as a pair potential would be: a module the layer-by-layer parts have no place for
    model.energy_network.add_module("pair_potential", torch.nn.Identity())
    model.split_problem = layer_split_problem(model.energy_network)
    output = tmp_path / "domain.nequip.pt2"
    with pytest.raises(ValueError) as error:
        compile_model(model, output, mode="aotinductor", target="pair_nequip_domain")
    assert str(error.value) == (
        "this model of nequip 0.19.1 cannot be split at its message-passing layers (target pair_nequip_domain, "
        "LAMMPS on several ranks): its energy network has modules this nequip cannot place between "
        "message-passing layers: pair_potential (Identity); compile it for one rank instead: --target pair_nequip "
        "or ase (.nequip.pt2), or --mode torchscript (.nequip.pth)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_model_whose_type_embedding_reads_per_frame_fields_is_refused(foreign):
    from torch.package import PackageImporter

    from nequip.ecosystem.model import EcosystemModel, EcosystemModelError, graph_model_of

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        stored = PackageImporter(str(foreign.package("float64"))).load_pickle("model", "eager_model.pkl")
    graph_model = graph_model_of(stored)
    graph_model.model.func.type_embed.do_categorical_graph_field_embed = True  # as a charge embedding sets it
    with pytest.raises(EcosystemModelError) as error:
        EcosystemModel(graph_model, "nequip 0.19.1")
    assert str(error.value) == (
        "its type embedding (model.func.type_embed) also embeds per-frame fields (such as a charge or spin state), "
        "which this nequip does not give a model"
    )
