"""TorchSim runs NequIP models many systems at a time (nequip.integrations.torchsim): each
system's energy, forces and stress equal what NequIPCalculator gives it alone, for compiled
files, packages and checkpoints; batched FIRE relaxations and NVT runs give each system what
the same run gives it alone; the autobatcher splits by the model's memory scaling."""

import contextlib
import warnings

import numpy as np
import pytest
import torch
import torch_sim as ts
from ase import Atoms
from ase.build import bulk
from torch_sim.models.interface import validate_model_outputs

from nequip.ase import NequIPCalculator
from nequip.data import DenseCellWarning
from nequip.integrations.torchsim import CPU_ATOMS_PER_CALL, NequIPModel

# the float64 tiny model as each kind of file
MODEL_FILES = {
    "batch-pt2": lambda compiled, files: compiled["float64", "aotinductor", "batch"],
    "pth": lambda compiled, files: compiled["float64", "torchscript", None],
    "package": lambda compiled, files: files["float64", "package"],
    "checkpoint": lambda compiled, files: files["float64", "checkpoint"],
}
RELATIVE = 1e-6
VACUUM = 10.0  # Å around slabs and molecules: beyond the cutoff (4 Å), no edge crosses it


def spread(atoms: Atoms, rng, min_distance: float = 1.6) -> Atoms:
    """Moves random atoms until no two (images included) are closer than ``min_distance``."""
    for _ in range(200):
        distances = atoms.get_all_distances(mic=True) + 10.0 * np.eye(len(atoms))
        close = np.argwhere(distances < min_distance)
        if len(close) == 0:
            return atoms
        atoms.positions[close[0][0]] = rng.uniform(0.0, 1.0, 3) @ atoms.cell.array
    raise AssertionError("could not spread the atoms out")


def periodic_systems():
    """17 periodic systems of 1-16 atoms, Si and C: cubic and primitive (triclinic) crystals,
    random triclinic cells, two slabs and two molecules in boxes with vacuum (TorchSim 0.3
    has one pbc for a whole batch), an isolated atom."""
    rng = np.random.default_rng(7)
    systems = [
        bulk("SiC", "zincblende", a=4.36, cubic=True),
        bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1)),
        bulk("Si", "diamond", a=5.43, cubic=True),
        bulk("C", "diamond", a=3.57, cubic=True),
        bulk("SiC", "zincblende", a=4.36),
        bulk("Si", "diamond", a=5.43),
        bulk("SiC", "zincblende", a=4.36).repeat((2, 2, 2)),
    ]
    for num_atoms in (3, 5, 7, 9, 12):
        cell = np.diag(rng.uniform(4.0, 7.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (1 - np.eye(3))
        symbols = rng.choice(["Si", "C"], num_atoms)
        systems.append(
            spread(Atoms(symbols, scaled_positions=rng.uniform(0, 1, (num_atoms, 3)), cell=cell, pbc=True), rng)
        )
    for slab in (bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((1, 1, 2)), bulk("Si", "diamond", a=5.43, cubic=True)):
        slab.center(vacuum=VACUUM / 2, axis=2)
        systems.append(slab)
    systems.append(Atoms("SiC2Si", positions=[[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0.3], [1.7, 1.9, 1.0]]))
    systems.append(Atoms("CSi", positions=[[0, 0, 0], [0, 0, 1.9]]))
    systems.append(Atoms("Si", positions=[[0, 0, 0]]))
    for atoms in systems[-3:]:
        atoms.center(vacuum=VACUUM)
    for index, atoms in enumerate(systems):
        atoms.pbc = True
        atoms.rattle(0.05, seed=index)
    return systems


def assert_close(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.abs(expected).max(initial=0.0))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= RELATIVE * scale + 1e-12, f"{what}: max difference {error:.3g} (scale {scale:.3g})"


def one_at_a_time(path, atoms: Atoms, pbc=None):
    """NequIPCalculator's energy, forces and stress (3, 3) (None where it has none)."""
    atoms = atoms.copy()
    if pbc is not None:
        atoms.pbc = pbc
    atoms.calc = NequIPCalculator(path)
    stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


@pytest.fixture(params=list(MODEL_FILES))
def model_path(request, compiled_models, model_files):
    return MODEL_FILES[request.param](compiled_models, model_files)


def test_batched_single_point_equals_ase_one_system_at_a_time(model_path):
    systems = periodic_systems()
    assert len(systems) >= 16 and len({len(atoms) for atoms in systems}) >= 8
    model = NequIPModel(model_path)
    state = ts.io.atoms_to_state(systems, model.device, model.dtype)
    out = model(state)
    assert out["energy"].shape == (len(systems),) and out["stress"].shape == (len(systems), 3, 3)
    first = 0
    for index, atoms in enumerate(systems):
        atoms_slice = slice(first, first + len(atoms))
        first = atoms_slice.stop
        # slabs: periodic in-plane only for ASE, the same neighbors and volume
        slab = index in (12, 13)
        energy, forces, stress = one_at_a_time(model_path, atoms, pbc=(True, True, False) if slab else None)
        assert_close(out["energy"][index], energy, f"system {index} energy")
        assert_close(out["forces"][atoms_slice], forces, f"system {index} forces")
        assert_close(out["stress"][index], stress, f"system {index} stress")


def test_calls_hold_at_most_max_atoms_per_call_and_change_no_result(compiled_models, monkeypatch):
    systems = periodic_systems()
    sizes = [len(atoms) for atoms in systems]
    path = compiled_models["float64", "aotinductor", "batch"]
    results, calls = {}, {}
    for limit in (None, 40):
        model = NequIPModel(path, max_atoms_per_call=limit)
        if limit is None:  # on a CPU the default is CPU_ATOMS_PER_CALL: the whole batch asked for
            model.max_atoms_per_call = None
        seen = []
        evaluate = model.model.evaluate
        monkeypatch.setattr(model.model, "evaluate", lambda frames, batch_size: seen.append(
            [len(f["pos"]) for f in frames]) or evaluate(frames, batch_size=batch_size))  # fmt: skip
        results[limit] = model(ts.io.atoms_to_state(systems, model.device, model.dtype))
        calls[limit] = seen
    assert calls[None] == [sizes]
    assert [n for call in calls[40] for n in call] == sizes  # every system once, in order
    assert all(sum(call) <= 40 or len(call) == 1 for call in calls[40]), calls[40]
    assert len(calls[40]) > 2
    for name in ("energy", "forces", "stress"):
        assert_close(results[40][name], results[None][name], name)


def test_cpu_default_groups_the_batch_in_calls_of_a_few_hundred_atoms(compiled_models):
    model = NequIPModel(compiled_models["float64", "aotinductor", "batch"])
    assert model.max_atoms_per_call == CPU_ATOMS_PER_CALL
    with pytest.raises(ValueError, match=r"^max_atoms_per_call must be at least 1, not 0$"):
        NequIPModel(compiled_models["float64", "aotinductor", "batch"], max_atoms_per_call=0)


def test_every_kind_of_file_passes_torchsims_own_interface_check(model_path):
    """TorchSim's validate_model_outputs: a batch of Si and Fe (here the model's C), the
    state left unchanged, the outputs' keys and shapes, each system alone = in the batch."""
    model = NequIPModel(model_path, species_to_type_map={"Si": "Si", "Fe": "C"})
    assert model.compute_stress and model.compute_forces
    validate_model_outputs(model, torch.device("cpu"), torch.float64)


def test_non_periodic_systems_have_energy_forces_and_no_stress(compiled_models):
    path = compiled_models["float64", "aotinductor", "batch"]
    molecules = [atoms for atoms in periodic_systems()[-3:]]
    for atoms in molecules:
        atoms.pbc = False
    model = NequIPModel(path)
    results = ts.static(molecules, model)
    for index, (atoms, result) in enumerate(zip(molecules, results)):
        energy, forces, _ = one_at_a_time(path, atoms)
        assert_close(result["potential_energy"].reshape(()), energy, f"molecule {index} energy")
        assert_close(result["forces"], forces, f"molecule {index} forces")
        assert torch.isnan(result["stress"]).all()


def test_per_axis_pbc_of_later_torchsim_releases_gives_slabs(compiled_models):
    """TorchSim >= 0.4 gives pbc as three bools: slabs periodic in-plane only, here with a
    vacuum narrower than the cutoff, so that images along z would change the result."""
    path = compiled_models["float64", "torchscript", None]
    slabs = [bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((1, 1, 2)), bulk("Si", "diamond", a=5.43, cubic=True)]
    for index, slab in enumerate(slabs):
        slab.center(vacuum=1.5, axis=2)
        slab.rattle(0.05, seed=index)
    model = NequIPModel(path)
    state = ts.io.atoms_to_state(slabs, model.device, model.dtype)
    all_periodic = model(state)
    state.pbc = torch.tensor([True, True, False])
    out = model(state)
    first = 0
    for index, atoms in enumerate(slabs):
        atoms_slice = slice(first, first + len(atoms))
        first = atoms_slice.stop
        energy, forces, stress = one_at_a_time(path, atoms, pbc=(True, True, False))
        assert_close(out["energy"][index], energy, f"slab {index} energy")
        assert_close(out["forces"][atoms_slice], forces, f"slab {index} forces")
        assert_close(out["stress"][index], stress, f"slab {index} stress")
        # periodic along z too, the slab would see its images across the vacuum
        assert float((all_periodic["forces"][atoms_slice] - out["forces"][atoms_slice]).abs().max()) > 1e-3


def test_unknown_species_is_refused_naming_the_way_out(compiled_models):
    model = NequIPModel(compiled_models["float64", "torchscript", None])
    systems = [bulk("Si", "diamond", a=5.43), bulk("Fe", "bcc", a=2.87)]
    state = ts.io.atoms_to_state(systems, model.device, model.dtype)
    message = r"^unknown species Fe: the model's types are \['Si', 'C'\]; map each species to one with species_to_type_map$"
    with pytest.raises(ValueError, match=message):
        model(state)


def relaxation_systems():
    rng = np.random.default_rng(3)
    systems = [
        bulk("SiC", "zincblende", a=4.36, cubic=True),
        bulk("Si", "diamond", a=5.43),
        bulk("SiC", "zincblende", a=4.36).repeat((2, 1, 1)),
    ]
    random_cell = Atoms(rng.choice(["Si", "C"], 6), scaled_positions=rng.uniform(0, 1, (6, 3)), cell=5.5 * np.eye(3), pbc=True)
    systems.append(spread(random_cell, rng))
    for index, atoms in enumerate(systems):
        atoms.rattle(0.1, seed=10 + index)
    return systems


def test_batched_fire_relaxation_equals_each_system_relaxed_alone(compiled_models):
    model = NequIPModel(compiled_models["float64", "aotinductor", "batch"])
    systems = relaxation_systems()

    def relax(atoms_list):
        return ts.optimize(
            system=atoms_list,
            model=model,
            optimizer=ts.optimizers.fire,
            convergence_fn=ts.generate_force_convergence_fn(force_tol=1e-3, include_cell_forces=False),
            max_steps=60,
        )

    batched = relax(systems).split()
    for index, atoms in enumerate(systems):
        (alone,) = relax([atoms]).split()
        assert_close(batched[index].positions, alone.positions, f"system {index} positions")
        assert_close(batched[index].energy, alone.energy, f"system {index} energy")
    # and it relaxed: every system's energy fell, and the largest force by half (the tiny
    # model's landscape is soft: 60 steps do not converge every system to 1e-3 eV/Å)
    initial = model(ts.io.atoms_to_state(systems, model.device, model.dtype))
    for index, state in enumerate(batched):
        assert float(state.energy) < float(initial["energy"][index]), f"system {index}: energy did not fall"
    final = max(float(state.forces.abs().max()) for state in batched)
    assert final < 0.5 * float(initial["forces"].abs().max())


@contextlib.contextmanager
def per_system_noise(monkeypatch, sizes, seeds):
    """torch.randn and torch.randn_like (TorchSim's initial momenta and Langevin noise) drawing
    each system's numbers from a generator of its own, seeded ``seeds[i]``: the same numbers
    whether the system runs alone or in a batch (in ``sizes`` order)."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    real_randn = torch.randn

    def draw(shape, dtype, device):
        if tuple(shape[:1]) != (sum(sizes),):
            raise AssertionError(f"TorchSim drew random numbers of shape {tuple(shape)}, not per atom")
        parts = [
            real_randn((size,) + tuple(shape[1:]), generator=generator, dtype=torch.float64)
            for size, generator in zip(sizes, generators)
        ]
        return torch.cat(parts).to(device=device, dtype=dtype or torch.get_default_dtype())

    def randn(*shape, generator=None, dtype=None, device=None, **_):
        # torch.randn(3, 4) or torch.randn((3, 4))
        return draw(shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape, dtype, device)

    def randn_like(tensor, dtype=None, device=None, **_):
        return draw(tensor.shape, dtype or tensor.dtype, device or tensor.device)

    monkeypatch.setattr(torch, "randn", randn)
    monkeypatch.setattr(torch, "randn_like", randn_like)
    try:
        yield
    finally:
        monkeypatch.undo()


def test_batched_nvt_run_equals_each_system_run_alone(compiled_models, monkeypatch):
    model = NequIPModel(compiled_models["float64", "aotinductor", "batch"])
    systems = relaxation_systems()

    def run(atoms_list, seeds):
        with per_system_noise(monkeypatch, [len(atoms) for atoms in atoms_list], seeds):
            return ts.integrate(
                system=atoms_list, model=model, integrator=ts.nvt_langevin, n_steps=20, temperature=600.0, timestep=0.001
            )

    batched = run(systems, seeds=range(len(systems))).split()
    for index, atoms in enumerate(systems):
        (alone,) = run([atoms], seeds=[index]).split()
        assert_close(batched[index].positions, alone.positions, f"system {index} positions")
        assert_close(batched[index].momenta, alone.momenta, f"system {index} momenta")
        assert_close(batched[index].energy, alone.energy, f"system {index} energy")
    # and the atoms moved
    start = ts.io.atoms_to_state(systems, model.device, model.dtype).positions
    moved = torch.cat([state.positions for state in batched]) - start
    assert float(moved.abs().max()) > 1e-3


def test_autobatcher_splits_by_memory_scaling_and_changes_no_result(compiled_models):
    model = NequIPModel(compiled_models["float64", "aotinductor", "batch"])
    assert model.memory_scales_with == "n_atoms_x_density"
    systems = periodic_systems()[:8]
    whole = ts.static(systems, model)
    scalers = ts.autobatching.calculate_memory_scaler
    largest = max(scalers(ts.io.atoms_to_state([atoms], model.device, model.dtype), model.memory_scales_with) for atoms in systems)
    batcher = ts.BinningAutoBatcher(model, memory_scales_with=model.memory_scales_with, max_memory_scaler=1.5 * largest)
    split = ts.static(systems, model, autobatcher=batcher)
    assert len(batcher.index_bins) >= 3
    for index, (a, b) in enumerate(zip(whole, split)):
        assert_close(b["potential_energy"], a["potential_energy"], f"system {index} energy")
        assert_close(b["forces"], a["forces"], f"system {index} forces")


def test_cell_too_small_warns_once_per_model_as_it_changes(compiled_models):
    """A cell in the wrong units under NPT: the cell, and the warning's numbers, change every
    step; the model warns once, not once per step."""
    model = NequIPModel(compiled_models["float64", "torchscript", None])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for scale in (1.0, 1.01, 1.02):
            atoms = Atoms("SiC", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * scale, pbc=True)
            model(ts.io.atoms_to_state([atoms], model.device, model.dtype))
    messages = [str(w.message) for w in caught if issubclass(w.category, DenseCellWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("the periodic cell looks too small for its 2 atoms: cell lengths 1, 1, 1 Å")
