"""pair_style nequip with a model that has ZBL repulsion (fixture zbl_model): on one rank the
whole model, on two the layer-by-layer parts, whose pair energy is a part of its own
(pair_energy_vjp in a .pt2, the method pair_energy of a .pth). Energies, per-atom energies,
forces and per-atom virials are the eager model's."""

import numpy as np
import pytest

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip.data import TypeMapper, from_ase
from test_lammps_multirank import NKTV2P, SINGLE_POINT, assert_close, lammps, small_sic, write_data

LAMMPS_ORDER = (0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)


def squeezed_sic():
    """64 atoms of 3C-SiC with one Si-C pair pushed to 0.9 Å (below ZBL's inner radius)."""
    atoms = small_sic()
    bond = atoms.positions[1] - atoms.positions[0]
    atoms.positions[1] = atoms.positions[0] + 0.9 * bond / np.linalg.norm(bond)
    return atoms


@pytest.mark.parametrize("kind, ranks", [("pt2", 1), ("pt2", 2), ("pth", 2)])
def test_lammps_with_zbl_is_the_eager_model(zbl_model, tmp_path, kind, ranks):
    atoms = squeezed_sic()
    model = zbl_model.pt2 if kind == "pt2" else zbl_model.pth
    run = lammps(tmp_path, ranks, write_data(atoms, tmp_path / "squeezed.data"), model, SINGLE_POINT)
    out = zbl_model.eager(from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX))
    energy = float(out["total_energy"])
    assert run.thermo[0, 1] == pytest.approx(energy, rel=1e-10, abs=0.0)
    # columns after id: fx fy fz pe/atom stress/atom(6)
    np.testing.assert_allclose(run.atoms[:, 0:3], out["forces"].detach().numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(run.atoms[:, 3], out["atomic_energy"].detach().numpy()[:, 0], rtol=0, atol=1e-10)
    atom_virial = out["atom_virial"].detach().numpy()
    expected = np.stack([atom_virial[:, a, b] for a, b in LAMMPS_ORDER], axis=1)
    assert_close(-run.atoms[:, 4:10] / NKTV2P, expected, 1e-10, "per-atom virials")
    # the squeezed pair's repulsion is in there: tens of eV/Å on its atoms
    assert np.abs(run.atoms[:2, 0:3]).max() > 20.0
