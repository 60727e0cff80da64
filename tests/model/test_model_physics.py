"""Physics of the NequIP model: symmetries, derivatives, extensivity, smoothness (float64)."""

import ase
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from nequip.data import TypeMapper, batch_frames, from_ase, keys
from nequip.model import HyperparameterError, NequIPModel, build_model

R_MAX = 3.5
TYPE_NAMES = ["Si", "C"]


def make_model(**overrides) -> NequIPModel:
    config = dict(
        type_names=TYPE_NAMES,
        r_max=R_MAX,
        l_max=2,
        parity=True,
        num_layers=2,
        num_features=6,
        num_bessels=6,
        radial_mlp_width=16,
        avg_num_neighbors=10.0,
        per_type_energy_shifts={"Si": -4.5, "C": -7.25},
        per_type_energy_scales=[1.3, 0.7],
        model_dtype="float64",
    )
    config.update(overrides)
    torch.manual_seed(0)
    return NequIPModel(**config).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def frame_of(atoms, r_max=R_MAX, per_edge_type_cutoff=None):
    return from_ase(atoms, TypeMapper(TYPE_NAMES), r_max, per_edge_type_cutoff=per_edge_type_cutoff)


def triclinic_sic(seed=0) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    atoms = bulk("SiC", "zincblende", a=4.36)
    atoms.set_cell(atoms.cell.array + 0.2 * rng.standard_normal((3, 3)), scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def assert_relative(actual, expected, tol):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    scale = expected.abs().max().clamp_min(1e-12)
    assert (actual - expected).abs().max() / scale <= tol, (actual, expected)


def test_energy_invariant_and_forces_stress_equivariant_under_rotation_translation_permutation(model):
    atoms = triclinic_sic()
    reference = model(frame_of(atoms))
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        rotation = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))[0]
        if seed == 1:  # an improper rotation: parity is a symmetry too
            rotation = -rotation
        rotation_np = rotation.numpy()
        moved = atoms.copy()
        moved.set_cell(atoms.cell.array @ rotation_np.T)
        moved.positions = atoms.positions @ rotation_np.T + np.array([0.3, -1.7, 2.9])
        permutation = np.random.default_rng(seed).permutation(len(atoms))
        moved = moved[permutation]
        out = model(frame_of(moved))
        assert_relative(out[keys.TOTAL_ENERGY], reference[keys.TOTAL_ENERGY], 1e-10)
        assert_relative(out[keys.ATOMIC_ENERGY], reference[keys.ATOMIC_ENERGY][permutation], 1e-10)
        assert_relative(out[keys.FORCES], (reference[keys.FORCES] @ rotation.T)[permutation], 1e-10)
        assert_relative(out[keys.STRESS][0], rotation @ reference[keys.STRESS][0] @ rotation.T, 1e-10)


def test_forces_are_negative_energy_gradient(model):
    atoms = triclinic_sic(seed=1)
    forces = model(frame_of(atoms))[keys.FORCES]
    step = 1e-5
    numerical = torch.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[atom, axis] += sign * step
                energies.append(model(frame_of(displaced))[keys.TOTAL_ENERGY].item())
            numerical[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
    assert_relative(forces, numerical, 1e-7)


def test_stress_is_strain_derivative_of_energy_over_volume(model):
    atoms = triclinic_sic(seed=2)
    out = model(frame_of(atoms))
    step = 1e-5
    numerical = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * step / 2
                strain[b, a] += sign * step / 2
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                energies.append(model(frame_of(strained))[keys.TOTAL_ENERGY].item())
            numerical[a, b] = (energies[0] - energies[1]) / (2 * step) / atoms.get_volume()
    assert_relative(out[keys.STRESS][0], numerical, 1e-7)
    assert_relative(out[keys.VIRIAL][0], -numerical * atoms.get_volume(), 1e-7)


def test_supercell_energy_is_extensive(model):
    atoms = triclinic_sic(seed=3)
    cell_out = model(frame_of(atoms))
    supercell_out = model(frame_of(atoms.repeat((2, 2, 2))))
    assert_relative(supercell_out[keys.TOTAL_ENERGY], 8 * cell_out[keys.TOTAL_ENERGY], 1e-10)
    assert_relative(supercell_out[keys.STRESS], cell_out[keys.STRESS], 1e-9)


def test_energy_and_force_continuous_as_neighbor_crosses_cutoff(model):
    def energy_and_force(distance):
        dimer = ase.Atoms("SiC", positions=[[0, 0, 0], [distance, 0, 0]])
        out = model(frame_of(dimer))
        return out[keys.TOTAL_ENERGY].item(), out[keys.FORCES][1, 0].item()

    isolated_energy = -4.5 - 7.25
    inside_energy, inside_force = energy_and_force(R_MAX - 1e-3)
    outside_energy, outside_force = energy_and_force(R_MAX + 1e-3)
    assert outside_energy == isolated_energy and outside_force == 0.0
    # the envelope and its first two derivatives vanish at r_max, so 1e-3 Å inside the cutoff the
    # interaction is of order (1e-3 / r_max)^3 ~ 2e-11 times the typical energy scale
    assert abs(inside_energy - isolated_energy) < 1e-9
    assert abs(inside_force) < 1e-8
    # and the interaction is really there well inside the cutoff
    mid_energy, mid_force = energy_and_force(0.6 * R_MAX)
    assert abs(mid_energy - isolated_energy) > 1e-4 and abs(mid_force) > 1e-4


@pytest.mark.parametrize("symbol, shift", [("Si", -4.5), ("C", -7.25)])
def test_isolated_atom_has_exactly_its_type_energy_shift(model, symbol, shift):
    out = model(frame_of(ase.Atoms(symbol, positions=[[1.0, 2.0, 3.0]])))
    assert out[keys.TOTAL_ENERGY].item() == shift
    assert torch.equal(out[keys.FORCES], torch.zeros(1, 3, dtype=torch.float64))


def test_atom_without_neighbors_in_a_larger_system_has_its_shift(model):
    atoms = molecule("CH4")
    atoms.symbols = "SiCCCC"
    atoms += ase.Atoms("C", positions=[[20.0, 0.0, 0.0]])
    out = model(frame_of(atoms))
    assert out[keys.ATOMIC_ENERGY][-1].item() == -7.25
    assert torch.equal(out[keys.FORCES][-1], torch.zeros(3, dtype=torch.float64))
    assert torch.isnan(out[keys.STRESS]).all()  # no cell, no volume
    assert torch.isfinite(out[keys.VIRIAL]).all()


def test_batched_evaluation_equals_frame_by_frame(model):
    structures = [triclinic_sic(seed=4), triclinic_sic(seed=5).repeat((1, 2, 1)), molecule("CH4")]
    structures[2].symbols = "SiCCCC"
    frames = [frame_of(atoms) for atoms in structures]
    batched = model(batch_frames(frames))
    singles = [model(frame) for frame in frames]
    for key in (keys.TOTAL_ENERGY, keys.ATOMIC_ENERGY, keys.FORCES):
        assert_relative(batched[key], torch.cat([out[key] for out in singles]), 1e-12)
    for frame_index in range(2):
        assert_relative(batched[keys.STRESS][frame_index], singles[frame_index][keys.STRESS][0], 1e-12)


def test_energy_only_evaluation_skips_derivatives():
    model = make_model()
    frame = frame_of(triclinic_sic())
    full = model(frame)
    model.compute_forces = model.compute_stress = False
    energy_only = model(frame)
    assert keys.FORCES not in energy_only and keys.STRESS not in energy_only and keys.VIRIAL not in energy_only
    assert torch.equal(energy_only[keys.TOTAL_ENERGY], full[keys.TOTAL_ENERGY])


def test_training_mode_keeps_graph_of_forces_for_force_losses():
    model = make_model().train()
    out = model(frame_of(triclinic_sic()))
    loss = out[keys.FORCES].square().sum() + out[keys.STRESS].square().sum()
    loss.backward()
    gradient = model.layers[0].interaction.tensor_product.radial_mlp.weights[0].grad
    assert gradient is not None and gradient.abs().sum() > 0


def test_float32_model_takes_and_returns_float64():
    model = make_model(model_dtype="float32")
    frame = frame_of(triclinic_sic())
    out = model(frame)
    reference = make_model()(frame)
    for key in (keys.TOTAL_ENERGY, keys.ATOMIC_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL):
        assert out[key].dtype == torch.float64
    # same weights in another precision: the same function to float32 accuracy
    assert_relative(out[keys.FORCES], reference[keys.FORCES], 1e-4)


def test_per_edge_type_cutoff_drops_interactions_beyond_the_pair_cutoff():
    model = make_model(per_edge_type_cutoff={"Si": {"Si": 2.5, "C": 3.0}, "C": 3.5})
    # a Si-Si pair at 2.8 Å interacts under r_max but not under its 2.5 Å pair cutoff
    atoms = ase.Atoms("SiSi", positions=[[0, 0, 0], [2.8, 0, 0]])
    assert model(frame_of(atoms))[keys.TOTAL_ENERGY].item() == -9.0
    atoms = ase.Atoms("SiC", positions=[[0, 0, 0], [2.8, 0, 0]])
    assert model(frame_of(atoms))[keys.TOTAL_ENERGY].item() != -4.5 - 7.25
    # pruning the neighbor list to the pair cutoffs changes nothing
    crystal = triclinic_sic(seed=6)
    pruned = frame_of(crystal, per_edge_type_cutoff=model.edge_type_cutoff.numpy())
    full = frame_of(crystal)
    assert pruned[keys.EDGE_INDEX].shape[1] < full[keys.EDGE_INDEX].shape[1]
    assert_relative(model(pruned)[keys.FORCES], model(full)[keys.FORCES], 1e-12)


def test_metadata_follows_the_file_contract():
    metadata = make_model(per_edge_type_cutoff=[2.5, 3.0, 3.0, 3.5]).metadata()
    assert metadata["model_dtype"] == "float64"
    assert metadata["type_names"] == "Si C"
    assert metadata["num_types"] == "2"
    assert float(metadata["r_max"]) == R_MAX
    assert [float(c) for c in metadata["per_edge_type_cutoff"].split(" ")] == [2.5, 3.0, 3.0, 3.5]
    assert metadata["allow_tf32"] == "0"
    assert all(isinstance(value, str) and value.isascii() for value in metadata.values())
    assert "per_edge_type_cutoff" not in make_model().metadata()


def test_config_rebuilds_the_same_architecture():
    model = make_model()
    rebuilt = build_model(model.config)
    rebuilt.load_state_dict(model.state_dict())
    frame = frame_of(triclinic_sic())
    assert torch.equal(rebuilt.eval()(frame)[keys.FORCES], model(frame)[keys.FORCES])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model_dtype="float16"), "model_dtype: must be 'float32' or 'float64', got 'float16'"),
        (dict(per_type_energy_shifts={"Si": 1.0}), r"per_type_energy_shifts: must give a value for each"),
        (dict(per_type_energy_scales=[1.0, float("nan")]), r"per_type_energy_scales: must be finite numbers, got \[1.0, nan\]"),
        (dict(per_edge_type_cutoff=[1.0, 2.0]), r"per_edge_type_cutoff: needs 2² = 4 values"),
        (dict(per_edge_type_cutoff={"Si": 9.0}), r"per_edge_type_cutoff: values must lie in \(0, r_max = 3.5\]"),
    ],
)
def test_bad_hyperparameters_are_refused_with_a_clear_message(overrides, message):
    config = make_model().config
    config.update(overrides)
    with pytest.raises(HyperparameterError, match=message):
        build_model(config)


def test_a_key_that_is_not_a_hyperparameter_is_refused_by_name():
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_featurs'"):
        build_model(dict(make_model().config, num_featurs=4))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_layers=0), "num_layers: must be an integer at least 1, got 0"),
        (dict(num_layers=2.5), "num_layers: must be an integer at least 1, got 2.5"),
        (dict(l_max=-1), "l_max: must be an integer at least 0, got -1"),
        (dict(num_features=0), "num_features: must be an integer at least 1, got 0"),
        (dict(num_bessels=0), "num_bessels: must be an integer at least 1, got 0"),
        (dict(radial_mlp_depth=-1), "radial_mlp_depth: must be an integer at least 0, got -1"),
        (dict(radial_mlp_width=0), "radial_mlp_width: must be an integer at least 1, got 0"),
        (dict(r_max=0.0), "r_max: must be a finite number greater than 0, got 0.0"),
        (dict(r_max=float("inf")), "r_max: must be a finite number greater than 0, got inf"),
        (dict(r_max=float("nan")), "r_max: must be a finite number greater than 0, got nan"),
        (dict(polynomial_cutoff_p=-6.0), "polynomial_cutoff_p: must be a finite number greater than 0, got -6.0"),
        (dict(avg_num_neighbors=0.0), "avg_num_neighbors: must be a finite number greater than 0, got 0.0"),
        (dict(type_names=[]), "type_names: must name at least one type, e.g. ['Si', 'C']"),
        (dict(type_names="Si C"), "type_names: must be a list of names, got the string 'Si C'; e.g. ['Si', 'C']"),
        (dict(type_names=["Si", "Si"]), "type_names: 'Si' appears more than once; give each type once"),
        *[
            (
                dict(type_names=["Si", bad]),
                f"type_names: {bad!r} is not a valid type name: each must be one ASCII word, without whitespace "
                "(the model's metadata joins the names with single spaces)",
            )
            for bad in ["", "C\t", "Si C", "\u00c5"]
        ],
    ],
)
def test_invalid_hyperparameter_values_are_refused_naming_the_argument(overrides, message):
    config = dict(type_names=TYPE_NAMES, r_max=R_MAX, num_layers=1, num_features=2)
    config.update(overrides)
    with pytest.raises(ValueError) as error:
        NequIPModel(**config)
    assert str(error.value) == message
