"""nequip-test: a metrics table, predictions in extxyz, a parity plot."""

import json

import ase.io
import numpy as np
import pytest

from nequip.scripts.evaluate import main as nequip_test
from nequip.train import model_from_checkpoint
from nequip.train.evaluation import predict


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
    expected = predict(model_from_checkpoint(trained_run / "best.ckpt"), reference)
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
    assert capsys.readouterr().err == f"nequip-test: checkpoint {damaged} cannot be read: the file is truncated or corrupt\n"
    assert not (tmp_path / "test").exists()
