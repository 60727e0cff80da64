"""Molecular dynamics with NequIPCalculator conserves energy: 1 ps of NVE (velocity Verlet,
1 fs steps) on the C++ runtime."""

import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from ase_systems import sic_triclinic
from nequip.ase import NequIPCalculator

MAX_DRIFT_EV_PER_ATOM_PS = 1e-3


@pytest.mark.slow
def test_nve_conserves_energy(compiled_models):
    atoms = sic_triclinic()
    atoms.calc = NequIPCalculator(compiled_models["float64", "aotinductor", "ase"])
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)

    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    times, energies = [], []

    def record():
        times.append(dynamics.get_time() / (1000 * units.fs))  # ps
        energies.append(atoms.get_total_energy() / len(atoms))

    dynamics.attach(record, interval=10)
    dynamics.run(1000)

    times, energies = np.array(times), np.array(energies)
    assert times[-1] == pytest.approx(1.0)
    assert atoms.get_temperature() > 50  # the atoms did move
    drift = np.polyfit(times, energies, 1)[0]  # eV/atom/ps
    assert abs(drift) < MAX_DRIFT_EV_PER_ATOM_PS, f"drift {drift * 1e3:.3f} meV/atom/ps"
    assert abs(energies[-1] - energies[0]) < MAX_DRIFT_EV_PER_ATOM_PS


def test_md_benchmark_loads_the_model_once(compiled_models, monkeypatch):
    """Its peak memory is that of one loaded model: the system's types come from the
    calculator's own model."""
    from nequip import _runtime
    from nequip.benchmark import md

    path = str(compiled_models["float64", "torchscript", None])  # compiled (and checked) first
    loads = []

    class CountedModel(_runtime.Model):
        def __init__(self, *args, **kwargs):
            loads.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_runtime, "Model", CountedModel)
    result = md.run_case("ase", path, num_atoms=64, steps=1, warmup=0, threads=1, device="cpu")
    assert loads == [path]
    assert result["atoms"] == 64 and result["timesteps_per_s"] > 0


def test_md_benchmark_lammps_case_reads_only_the_metadata(compiled_models, monkeypatch):
    """LAMMPS loads the model; the benchmark itself reads only the file's type names."""
    from nequip import _runtime
    from nequip.benchmark import md

    path = str(compiled_models["float64", "torchscript", None])
    loads = []

    class CountedModel(_runtime.Model):
        def __init__(self, *args, **kwargs):
            loads.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_runtime, "Model", CountedModel)
    result = md.run_case("lammps", path, num_atoms=64, steps=1, warmup=0, threads=1, device="cpu")
    assert loads == []
    assert result["atoms"] == 64 and result["timesteps_per_s"] > 0
