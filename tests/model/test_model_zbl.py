"""The ZBL repulsion of a model (model.zbl): its energy against the formula, its derivatives,
its smoothness at the switching radii, and its configuration (float64, eager)."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from nequip.data import TypeMapper, from_ase, keys
from nequip.model import NequIPModel, build_model

TYPE_NAMES = ["Si", "C"]
Z = {"Si": 14, "C": 6}
R_MAX = 4.0
INNER, OUTER = 1.2, 2.5


def zbl_reference(z1: int, z2: int, r: float) -> float:
    """The universal ZBL pair energy (eV) at r (Å), written out from Ziegler, Biersack and Littmark."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (
        0.18175 * math.exp(-3.19980 * x)
        + 0.50986 * math.exp(-0.94229 * x)
        + 0.28022 * math.exp(-0.40290 * x)
        + 0.02817 * math.exp(-0.20162 * x)
    )
    return 14.399645 * z1 * z2 / r * phi


def make_model(zbl=None, **overrides) -> NequIPModel:
    config = dict(
        type_names=TYPE_NAMES,
        r_max=R_MAX,
        l_max=1,
        num_layers=2,
        num_features=4,
        num_bessels=6,
        radial_mlp_width=8,
        avg_num_neighbors=4.0,
        per_type_energy_shifts=[-4.5, -7.25],
        per_type_energy_scales=[1.3, 0.7],
        model_dtype="float64",
        zbl=zbl,
    )
    config.update(overrides)
    return build_model(config, seed=0).eval()


@pytest.fixture(scope="module")
def with_zbl():
    return make_model(zbl=dict(inner_radius=INNER, outer_radius=OUTER))


@pytest.fixture(scope="module")
def without_zbl():
    return make_model()


def dimer(a: str, b: str, r: float) -> Atoms:
    return Atoms(a + b, positions=[[0.0, 0.0, 0.0], [r * 0.6, r * 0.8, 0.0]], pbc=False)


def frame_of(atoms):
    return from_ase(atoms, TypeMapper(TYPE_NAMES), R_MAX)


def energies(model, atoms):
    out = model(frame_of(atoms))
    return float(out[keys.TOTAL_ENERGY]), out[keys.ATOMIC_ENERGY].detach().view(-1).numpy()


@pytest.mark.parametrize("pair", [("Si", "Si"), ("Si", "C"), ("C", "C")])
def test_dimer_energy_is_the_zbl_formula_below_the_inner_radius(with_zbl, without_zbl, pair):
    """The same weights with and without ZBL differ by the ZBL energy, half on each atom."""
    for r in (0.2, 0.5, 0.8, 1.1, 1.19):
        total, atomic = energies(with_zbl, dimer(*pair, r))
        learned_total, learned_atomic = energies(without_zbl, dimer(*pair, r))
        expected = zbl_reference(Z[pair[0]], Z[pair[1]], r)
        assert total - learned_total == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(atomic - learned_atomic, [expected / 2, expected / 2], rtol=1e-12)


def test_zbl_is_zero_beyond_the_outer_radius(with_zbl, without_zbl):
    for r in (OUTER, OUTER + 1e-9, 3.0, 3.9):
        assert energies(with_zbl, dimer("Si", "C", r))[0] == energies(without_zbl, dimer("Si", "C", r))[0]


def close_cell() -> Atoms:
    """Periodic, triclinic, with pairs below the inner radius and in the switching region."""
    atoms = Atoms(
        "SiCSiC",
        positions=[[0.0, 0.0, 0.0], [0.9, 0.3, 0.2], [2.1, 1.9, 0.4], [1.2, 2.6, 1.9]],
        cell=[[3.6, 0.0, 0.0], [0.4, 3.4, 0.0], [-0.3, 0.5, 3.3]],
        pbc=True,
    )
    atoms.rattle(0.05, seed=2)
    return atoms


def edge_lengths(atoms) -> np.ndarray:
    frame = frame_of(atoms)
    pos, cell = frame[keys.POS], frame[keys.CELL][0]
    i, j = frame[keys.EDGE_INDEX]
    return (pos[j] - pos[i] + frame[keys.EDGE_CELL_SHIFT] @ cell).norm(dim=-1).numpy()


def test_close_cell_has_pairs_inside_and_in_the_switching_region():
    lengths = edge_lengths(close_cell())
    assert (lengths < INNER).any() and ((lengths > INNER) & (lengths < OUTER)).any()


def test_forces_are_negative_energy_gradient_with_zbl(with_zbl):
    atoms = close_cell()
    forces = with_zbl(frame_of(atoms))[keys.FORCES].numpy()
    h = 1e-5
    numerical = np.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            numerical[atom, axis] = -(energies(with_zbl, plus)[0] - energies(with_zbl, minus)[0]) / (2 * h)
    assert np.abs(forces).max() > 10.0  # the repulsion is there
    np.testing.assert_allclose(forces, numerical, rtol=0, atol=1e-6 * np.abs(forces).max())


def test_stress_is_strain_derivative_with_zbl(with_zbl):
    atoms = close_cell()
    stress = with_zbl(frame_of(atoms))[keys.STRESS][0].numpy()
    h = 1e-6
    numerical = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = h / 2 if a != b else h
            values = []
            for sign in (1, -1):
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
                values.append(energies(with_zbl, deformed)[0])
            numerical[a, b] = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(stress, numerical, rtol=0, atol=1e-6 * np.abs(stress).max())


def dimer_energy_and_force(model, r):
    out = model(frame_of(dimer("Si", "C", r)))
    # the force on the second atom along the bond
    return float(out[keys.TOTAL_ENERGY]), float(out[keys.FORCES][1] @ torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("radius", [INNER, OUTER])
def test_energy_and_force_continuous_at_the_switching_radii(with_zbl, without_zbl, radius):
    """The pair energy is C2 at both radii. Across the radius, differences of a smooth function
    shrink with the step h as h (first) and h² (second); a jump in the energy or the force would
    leave a first difference of the size of the jump, a kink in the force a second one of order h."""

    def pair(r):
        energy, force = dimer_energy_and_force(with_zbl, r)
        learned_energy, learned_force = dimer_energy_and_force(without_zbl, r)
        return np.array([energy - learned_energy, force - learned_force])

    def differences(h):
        minus, center, plus = pair(radius - h), pair(radius), pair(radius + h)
        return plus - minus, plus - 2 * center + minus

    (first, second), (first_half, second_half) = differences(1e-3), differences(5e-4)
    energy, force = 0, 1
    assert abs(first[energy]) / abs(first_half[energy]) > 1.8
    assert abs(first[force]) / abs(first_half[force]) > 1.8
    assert abs(second[force]) / abs(second_half[force]) > 3.5
    e_0, f_0 = pair(radius)
    if radius == OUTER:
        assert e_0 == 0.0 and abs(f_0) < 1e-12  # (the learned force to rounding)
    else:
        # S = 1 and S' = 0 at the inner radius: the bare ZBL energy and force
        assert e_0 == pytest.approx(zbl_reference(14, 6, radius), rel=1e-12)
        expected_force = -(zbl_reference(14, 6, radius + 1e-6) - zbl_reference(14, 6, radius - 1e-6)) / 2e-6
        assert f_0 == pytest.approx(expected_force, rel=1e-7)


def test_zbl_repulsion_decreases_monotonically_through_the_switch(with_zbl, without_zbl):
    distances = np.linspace(0.3, OUTER + 0.1, 60)
    pair = [energies(with_zbl, dimer("Si", "C", r))[0] - energies(without_zbl, dimer("Si", "C", r))[0] for r in distances]
    assert np.all(np.diff(pair) <= 0) and pair[-1] == 0.0


def test_default_radii_are_fractions_of_the_covalent_radii_within_the_cutoff():
    model = make_model(zbl=True, type_names=["Cu", "H"], per_edge_type_cutoff={"Cu": {"Cu": 1.5}})
    zbl = model.config["zbl"]
    assert zbl["atomic_numbers"] == [29, 1]
    sums = {(a, b): covalent_radii[za] + covalent_radii[zb] for a, za in (("Cu", 29), ("H", 1)) for b, zb in (("Cu", 29), ("H", 1))}
    # Cu-Cu: 0.75 * 2.64 Å is beyond its cutoff of 1.5 Å: outer = 1.5, inner keeps the ratio 2/3
    assert zbl["outer_radius"] == pytest.approx([1.5, 0.75 * sums["Cu", "H"], 0.75 * sums["H", "Cu"], 0.75 * sums["H", "H"]])
    assert zbl["inner_radius"] == pytest.approx([1.0, 0.5 * sums["Cu", "H"], 0.5 * sums["H", "Cu"], 0.5 * sums["H", "H"]])


def test_resolved_zbl_config_rebuilds_the_same_model(with_zbl):
    rebuilt = NequIPModel(**with_zbl.config).eval()
    rebuilt.load_state_dict(with_zbl.state_dict())
    atoms = close_cell()
    assert energies(rebuilt, atoms)[0] == energies(with_zbl, atoms)[0]


def test_zbl_is_recorded_in_the_metadata(with_zbl, without_zbl):
    metadata = with_zbl.metadata()
    assert metadata["pair_potential"] == "zbl"
    assert metadata["zbl_atomic_numbers"] == "14 6"
    assert metadata["zbl_inner_radius"] == " ".join([repr(INNER)] * 4)
    assert metadata["zbl_outer_radius"] == " ".join([repr(OUTER)] * 4)
    assert not any(key.startswith(("pair_potential", "zbl")) for key in without_zbl.metadata())


def test_atomic_numbers_for_type_names_that_are_not_elements():
    model = make_model(zbl=dict(atomic_numbers={"A": 29, "B": 8}), type_names=["A", "B"])
    assert model.config["zbl"]["atomic_numbers"] == [29, 8]


@pytest.mark.parametrize(
    "zbl, type_names, message",
    [
        (True, ["A", "Cu"], "zbl: the type name(s) 'A' are not chemical symbols: give the atomic number of each "
                            "type, e.g. zbl: {atomic_numbers: {A: 29}}"),
        (dict(atomic_numbers={"Si": 14}), TYPE_NAMES,
         "zbl.atomic_numbers: must give the atomic number of each of the model's types ['Si', 'C']; "
         "unknown: [], missing: ['C']"),
        (dict(atomic_numbers={"Si": 14, "C": 0}), TYPE_NAMES,
         "zbl.atomic_numbers: 'C' has 0, not an atomic number (an integer 1 to 118)"),
        (dict(outer_radius=4.5), TYPE_NAMES,
         "zbl: the Si-Si pair needs 0 < inner_radius < outer_radius <= its cutoff 4, got inner_radius 1.11 and "
         "outer_radius 4.5"),
        (dict(inner_radius=2.0, outer_radius=1.0), TYPE_NAMES,
         "zbl: the Si-Si pair needs 0 < inner_radius < outer_radius <= its cutoff 4, got inner_radius 2 and "
         "outer_radius 1"),
        (dict(inner=1.0), TYPE_NAMES, "zbl: unknown option(s) 'inner'; the options are atomic_numbers, inner_radius, "
                                      "outer_radius"),
        ("yes", TYPE_NAMES, "zbl: must be true, false or a mapping with keys atomic_numbers, inner_radius, "
                            "outer_radius; got 'yes'"),
    ],
)  # fmt: skip
def test_bad_zbl_options_are_refused_by_name(zbl, type_names, message):
    with pytest.raises(ValueError) as error:
        make_model(zbl=zbl, type_names=type_names, per_type_energy_shifts=None, per_type_energy_scales=None)
    assert str(error.value) == message


def test_model_constructor_takes_resolved_zbl_parameters_only():
    with pytest.raises(ValueError) as error:
        NequIPModel(TYPE_NAMES, R_MAX, zbl=True)
    assert str(error.value) == (
        "zbl: NequIPModel takes the resolved parameters (atomic_numbers, inner_radius, outer_radius: one atomic "
        "number per type, num_types**2 radii each), got True; nequip.model.build_model fills them in from zbl: "
        "true or a partial mapping"
    )
