"""nequip-test (nequip.inference.evaluation): a metrics table, predictions in extxyz, a parity plot;
the same metrics as the training loop's test stage."""

import json
import sys

import ase
import ase.io
import lightning as L
import numpy as np
import pytest
import torch

from nequip.data import AtomicDataset, TypeMapper, read_frames
from nequip.inference import open_model
from nequip.inference.eager import EagerModel
from nequip.inference.evaluation import evaluate, predict
from nequip.scripts.evaluate import main as nequip_test
from nequip.train import NequIPLightningModule
from nequip.train.metrics import ErrorMetrics


def test_nequip_test_writes_metrics_predictions_and_parity_plot(trained_run, tiny_data, tmp_path, capsys):
    output = tmp_path / "test"
    assert nequip_test([str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(output)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["quantity", "MAE", "RMSE", "unit"]
    assert [line.split()[0] for line in printed[1:6]] == ["energy_per_atom", "forces", "forces_Cu", "forces_Au", "stress"]
    assert printed[-1] == f"wrote predictions.extxyz, parity.png and metrics.json to {output}"

    metrics = json.loads((output / "metrics.json").read_text())
    for line in printed[1:6]:
        name, mae, rmse, unit = line.split()
        assert float(mae) == pytest.approx(metrics[name]["mae"], rel=1e-5)
        assert float(rmse) == pytest.approx(metrics[name]["rmse"], rel=1e-5)
        assert unit == metrics[name]["unit"]
    assert metrics["forces"]["mae"] <= metrics["forces"]["rmse"]

    reference = ase.io.read(tiny_data, ":")
    written = ase.io.read(output / "predictions.extxyz", ":")
    assert len(written) == len(reference)
    expected = predict(open_model(trained_run / "best.ckpt"), reference)
    for atoms, original, result in zip(written, reference, expected):
        assert atoms.info["REF_energy"] == pytest.approx(original.get_potential_energy())
        np.testing.assert_allclose(atoms.arrays["REF_forces"], original.get_forces())
        assert atoms.get_potential_energy() == pytest.approx(float(result["predicted"]["total_energy"][0]))
        # extxyz keeps 8 decimals
        np.testing.assert_allclose(atoms.get_forces(), result["predicted"]["forces"], rtol=0, atol=1e-7)
    forces_error = np.concatenate([(a.get_forces() - a.arrays["REF_forces"]).ravel() for a in written])
    assert np.abs(forces_error).mean() == pytest.approx(metrics["forces"]["mae"])

    assert (output / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nequip_test_refuses_a_truncated_checkpoint(trained_run, tiny_data, tmp_path, capsys):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes((trained_run / "best.ckpt").read_bytes()[:1000])
    assert nequip_test([str(damaged), str(tiny_data), "--output", str(tmp_path / "test")]) == 1
    assert capsys.readouterr().err == f"nequip-test: error: {damaged}: damaged checkpoint: the file is truncated or corrupted\n"
    assert not (tmp_path / "test").exists()


def nequip_test_error(capsys, argv) -> str:
    """Run nequip-test expecting a refusal; its one stderr line."""
    assert nequip_test(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_test_stage_and_nequip_test_compute_the_same_metrics(trained_run, tiny_data, tmp_path, capsys):
    """The Lightning module's test metrics (the test stage after training) equal nequip-test's."""
    checkpoint = trained_run / "best.ckpt"
    module = NequIPLightningModule.from_checkpoint(checkpoint)
    model_config = module.hparams.model_config
    dataset = AtomicDataset.from_ase(read_frames(tiny_data), TypeMapper(model_config["type_names"]), model_config["r_max"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=AtomicDataset.collate_fn)
    tester = L.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False, enable_progress_bar=False)
    (logged,) = tester.test(module, dataloaders=loader, verbose=False)

    assert nequip_test([str(checkpoint), str(tiny_data), "--output", str(tmp_path / "test"), "--batch-size", "4"]) == 0
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    # the test stage evaluates what was learned (no stress here), nequip-test what is labelled
    rows = ["energy_per_atom", "forces", "forces_Cu", "forces_Au"]
    assert {name for name in logged if not name.startswith("test_loss")} == {
        f"test_{row}_{statistic}" for row in rows for statistic in ("mae", "rmse")
    }
    for row in rows:
        for statistic in ("mae", "rmse"):
            assert logged[f"test_{row}_{statistic}"] == pytest.approx(metrics[row][statistic], rel=1e-6), (row, statistic)


def labelled_sic_frames(path, n_frames: int = 3):
    """Rattled 3C-SiC cells with arbitrary (seeded) labels: the metrics compare two models' predictions."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    frames = []
    for seed in range(n_frames):
        atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal(-60.0, 1.0)),
            forces=rng.normal(size=(len(atoms), 3)),
            stress=rng.normal(scale=0.01, size=6),
        )
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize(
    "compiled_key",
    [("float64", "torchscript", None), ("float64", "aotinductor", "ase"), ("float32", "aotinductor", "pair_nequip")],
    ids=["pth", "pt2-ase", "pt2-pair_nequip-float32"],
)
def test_nequip_test_of_a_compiled_file_equals_its_eager_model(compiled_models, compiled_key, tmp_path, capsys):
    data = labelled_sic_frames(tmp_path / "sic.xyz")
    dtype = compiled_key[0]
    eager = evaluate(EagerModel("tiny", module=compiled_models.eager[dtype]), data, tmp_path / "eager").metrics
    assert nequip_test([str(compiled_models[compiled_key]), str(data), "--output", str(tmp_path / "compiled")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote predictions.extxyz, parity.png and metrics.json to {tmp_path / 'compiled'}"
    )
    compiled = json.loads((tmp_path / "compiled" / "metrics.json").read_text())
    assert list(compiled) == ["energy_per_atom", "forces", "forces_Si", "forces_C", "stress"]
    assert compiled.keys() == eager.keys()
    tolerance = 1e-10 if dtype == "float64" else 1e-5
    for row in eager:
        for statistic in ("mae", "rmse"):
            assert compiled[row][statistic] == pytest.approx(eager[row][statistic], rel=tolerance), (row, statistic)
        assert compiled[row]["count"] == eager[row]["count"]
    predicted = ase.io.read(tmp_path / "compiled" / "predictions.extxyz", ":")
    expected = ase.io.read(tmp_path / "eager" / "predictions.extxyz", ":")
    for got, want in zip(predicted, expected):
        np.testing.assert_allclose(got.get_forces(), want.get_forces(), rtol=0, atol=1e-6)


def test_nequip_test_refuses_an_output_that_is_a_file(trained_run, tiny_data, tmp_path, capsys):
    output = tmp_path / "results"
    output.write_text("not a directory")
    err = nequip_test_error(capsys, [str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(output)])
    assert err == f"nequip-test: error: output directory {output} is a file; name a directory (it is created if needed)\n"
    under = output / "run1"
    err = nequip_test_error(capsys, [str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(under)])
    assert err == (
        f"nequip-test: error: output directory {under} lies under the file {output}; "
        "name a directory (it is created if needed)\n"
    )
    assert output.read_text() == "not a directory"


@pytest.mark.parametrize(
    "index, message",
    [
        ("100", "frame index 100 is out of range: {data} has 10 frames (0 to 9, or -10 to -1)"),
        ("-11", "frame index -11 is out of range: {data} has 10 frames (0 to 9, or -10 to -1)"),
        ("20:30", "frame index '20:30' selects none of the 10 frames of {data}"),
        ("abc", "frame index 'abc' is neither a frame number nor a slice (such as 0, -1, 10:20, ::2)"),
        ("::0", "frame index '::0': slice step cannot be zero"),
    ],
)
def test_nequip_test_refuses_an_index_outside_the_file(trained_run, tiny_data, tmp_path, capsys, index, message):
    output = tmp_path / "test"
    err = nequip_test_error(capsys, [str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(output), "--index", index])
    assert err == f"nequip-test: error: {message.format(data=tiny_data)}\n"
    assert not output.exists()


def test_nequip_test_selects_frames_by_their_index_in_the_file(trained_run, tiny_data, tmp_path, capsys):
    assert nequip_test([str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(tmp_path), "--index=-2:"]) == 0
    written = ase.io.read(tmp_path / "predictions.extxyz", ":")
    reference = ase.io.read(tiny_data, "-2:")
    assert [a.info["REF_energy"] for a in written] == pytest.approx([a.get_potential_energy() for a in reference])


def unlabelled_copy(tiny_data, path, keep_forces_of=()):
    """tiny_data without energies and stresses, and with forces only on the frames ``keep_forces_of``."""
    frames = ase.io.read(tiny_data, ":")
    stripped = []
    for index, atoms in enumerate(frames):
        forces = atoms.get_forces()
        copy = ase.Atoms(atoms.get_chemical_symbols(), atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        if index in keep_forces_of:
            copy.arrays["forces"] = forces
        stripped.append(copy)
    ase.io.write(path, stripped, format="extxyz")
    return path


def test_nequip_test_refuses_data_without_labels(trained_run, tiny_data, tmp_path, capsys):
    data = unlabelled_copy(tiny_data, tmp_path / "bare.xyz")
    err = nequip_test_error(capsys, [str(trained_run / "best.ckpt"), str(data), "--output", str(tmp_path / "test")])
    assert err == (
        f"nequip-test: error: the frames of {data} have no labels to test against: give frames with reference "
        "energies, forces or stresses (extxyz: energy=... in the comment line, a forces column)\n"
    )
    assert not (tmp_path / "test").exists()


def test_nequip_test_evaluates_the_labels_that_exist_and_names_the_others(trained_run, tiny_data, tmp_path, capsys):
    data = unlabelled_copy(tiny_data, tmp_path / "forces.xyz", keep_forces_of=range(10))
    assert nequip_test([str(trained_run / "best.ckpt"), str(data), "--output", str(tmp_path / "test")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "nequip-test: note: energy_per_atom not evaluated: no frame has the label 'energy'",
        "nequip-test: note: stress not evaluated: not every frame is periodic and has the label 'stress'",
    ]
    assert [line.split()[0] for line in captured.out.splitlines()[1:-1]] == ["forces", "forces_Cu", "forces_Au"]

    data = unlabelled_copy(tiny_data, tmp_path / "some.xyz", keep_forces_of=(0, 1, 2))
    err = nequip_test_error(capsys, [str(trained_run / "best.ckpt"), str(data), "--output", str(tmp_path / "t2")])
    assert err.startswith(f"nequip-test: error: the frames of {data} have no labels to test against")


def test_nequip_test_names_frames_that_lack_a_label(trained_run, tiny_data, tmp_path, capsys):
    frames = ase.io.read(tiny_data, ":")
    for index in (3, 7):
        frames[index].calc = None
        frames[index].arrays["forces"] = np.zeros((len(frames[index]), 3))
    ase.io.write(tmp_path / "partial.xyz", frames, format="extxyz")
    assert nequip_test([str(trained_run / "best.ckpt"), str(tmp_path / "partial.xyz"), "--output", str(tmp_path / "t")]) == 0
    notes = capsys.readouterr().err.splitlines()
    assert notes == [
        "nequip-test: note: energy_per_atom not evaluated: 2 of 10 frames lack the label 'energy' (frames 3, 7)",
        "nequip-test: note: stress not evaluated: not every frame is periodic and has the label 'stress'",
    ]


def test_nequip_test_without_matplotlib_writes_everything_but_the_plot(trained_run, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    output = tmp_path / "test"
    assert nequip_test([str(trained_run / "best.ckpt"), str(tiny_data), "--output", str(output)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "nequip-test: note: parity.png not written: matplotlib is not installed (pip install matplotlib)\n"
    assert captured.out.splitlines()[-1] == f"wrote predictions.extxyz and metrics.json to {output}"
    assert sorted(p.name for p in output.iterdir()) == ["metrics.json", "predictions.extxyz"]


def test_test_stage_refuses_an_empty_checkpoint_path():
    # what a run that wrote no checkpoint (trainer.max_epochs=0) has as its best checkpoint
    with pytest.raises(FileNotFoundError) as error:
        NequIPLightningModule.from_checkpoint("")
    assert str(error.value) == "no checkpoint to load: the path is empty"


def test_error_metrics_divide_energies_by_atoms_and_split_forces_by_type():
    metrics = ErrorMetrics(["energy_per_atom", "forces"], type_names=["A", "B"])
    batch = {
        "num_atoms": torch.tensor([1, 2]),
        "atom_types": torch.tensor([0, 1, 0]),
        "total_energy": torch.tensor([[1.0], [0.0]], dtype=torch.float64),
        "forces": torch.zeros(3, 3, dtype=torch.float64),
    }
    forces = torch.tensor([[1.0, 0, 0], [0, -2.0, 0], [0, 0, 3.0]], dtype=torch.float64)
    metrics.update(batch, {"total_energy": torch.tensor([[2.0], [-6.0]], dtype=torch.float64), "forces": forces})
    # a second batch of one atom of type A, with no error
    metrics.update(
        {key: batch[key][:1] for key in batch} | {"num_atoms": torch.tensor([1])},
        {"total_energy": torch.tensor([[1.0]], dtype=torch.float64), "forces": torch.zeros(1, 3, dtype=torch.float64)},
    )
    result = {row: {name: float(value) for name, value in values.items()} for row, values in metrics.compute().items()}
    # energy errors per atom: 1/1, -6/2, 0/1
    assert result["energy_per_atom"] == pytest.approx({"mae": 4 / 3, "rmse": (10 / 3) ** 0.5, "count": 3})
    assert result["forces"] == pytest.approx({"mae": 6 / 12, "rmse": (14 / 12) ** 0.5, "count": 12})
    assert result["forces_A"] == pytest.approx({"mae": 4 / 9, "rmse": (10 / 9) ** 0.5, "count": 9})
    assert result["forces_B"] == pytest.approx({"mae": 2 / 3, "rmse": (4 / 3) ** 0.5, "count": 3})
