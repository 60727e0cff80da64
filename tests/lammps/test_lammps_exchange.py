"""pair_style nequip on several MPI ranks with the per-layer feature exchange: a TorchScript file
of three layers (so that a middle layer both receives its ghosts' features and sends their
gradients back) gives on 2 and 4 ranks the energies, forces, virial, per-atom energies and
per-atom virials of one rank, and each rank evaluates the edges of its own atoms only.
"""

import re

import numpy as np
import pytest
from ase.build import bulk

from test_lammps_multirank import (
    NVE,
    NVE_STEPS,
    NVE_THERMO_EVERY,
    RANKS,
    SINGLE_POINT,
    SYSTEMS,
    assert_atom_virials_sum_to_the_virial,
    assert_close,
    assert_same_single_point,
    lammps,
    small_sic,
    write_data,
)

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip.data import TypeMapper, compute_neighbor_list, from_ase


def cluster_at_the_bottom():
    """360 atoms of 3C-SiC (z from 1 to 22 Å) at the bottom of a 48 Å box, fixed boundaries,
    split in z: on 2 ranks the upper one owns no atoms, only ghosts; on 4 the third owns none
    and the fourth has no atoms at all, not even ghosts (its exchanges are empty)."""
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((3, 3, 5))
    atoms.rattle(0.1, seed=8)
    atoms.positions += 1.0
    atoms.set_cell([15.08, 15.08, 48.0])
    atoms.pbc = False
    return atoms


EXCHANGE_SYSTEMS = dict(SYSTEMS, empty_ranks=(cluster_at_the_bottom, "f f f", "processors 1 1 {ranks}"))


def test_the_cluster_leaves_ranks_empty():
    """The geometry cluster_at_the_bottom's docstring promises, for LAMMPS' even split of the box
    (cutoff 4 Å + skin 2 Å of ghosts)."""
    z = cluster_at_the_bottom().positions[:, 2]
    assert 12.0 + 6.0 < z.max() < 24.0  # 2 ranks: the upper one has ghosts only
    assert z.min() < 12.0 < z.max()  # 4 ranks: the first two own atoms, the fourth sees none


@pytest.fixture(scope="module")
def deep_pth(deep_model):
    return deep_model.pth


@pytest.fixture(scope="module")
def exchange_runs(deep_pth, tmp_path_factory):
    """run 0 of every system on 1, 2 and 4 ranks with the three-layer TorchScript file."""
    directory = tmp_path_factory.mktemp("exchange")
    runs = {}
    for name, (structure, boundary, processors) in EXCHANGE_SYSTEMS.items():
        data = write_data(structure(), directory / f"{name}.data")
        for ranks in RANKS:
            grid = processors.format(ranks=ranks) if ranks > 1 else ""
            runs[name, ranks] = lammps(directory / f"{name}_{ranks}", ranks, data, deep_pth, SINGLE_POINT,
                                       boundary=boundary, processors=grid)  # fmt: skip
    return runs


@pytest.mark.parametrize("system", sorted(EXCHANGE_SYSTEMS))
@pytest.mark.parametrize("ranks", RANKS[1:])
def test_ranks_give_the_one_rank_results(exchange_runs, system, ranks):
    assert_same_single_point(exchange_runs[system, ranks], exchange_runs[system, 1])


@pytest.mark.parametrize("system", sorted(EXCHANGE_SYSTEMS))
@pytest.mark.parametrize("ranks", RANKS)
def test_per_atom_virials_sum_to_the_global_virial(exchange_runs, system, ranks):
    assert_atom_virials_sum_to_the_virial(exchange_runs[system, ranks], f"{ranks} ranks")


@pytest.mark.parametrize("system", sorted(EXCHANGE_SYSTEMS))
def test_each_rank_evaluates_the_edges_of_its_own_atoms(exchange_runs, system):
    """The report's edges per owned atom are the system's edges per atom (work factor 1), and
    no ghost shell is set up."""
    structure, _, _ = EXCHANGE_SYSTEMS[system]
    atoms = structure()
    edge_index, _ = compute_neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, R_MAX)
    edges_per_atom = edge_index.shape[1] / len(atoms)
    assert "per owned atom" not in exchange_runs[system, 1].log
    for ranks in RANKS[1:]:
        log = exchange_runs[system, ranks].log
        assert "communication cutoff set to" not in log
        (report,) = re.findall(rf"pair_style nequip: on {ranks} ranks the model evaluated .*", log)
        atoms_factor, edges = re.match(r".* evaluated (\S+) atoms and (\S+) edges per owned atom", report).groups()
        assert report.endswith("(edges of owned atoms only, node features exchanged after every layer)")
        assert float(edges) == pytest.approx(edges_per_atom, abs=0.05)
        # the ghosts are nodes too (no edges of their own): one cutoff and the skin deep
        assert 1.0 < float(atoms_factor) < 20.0


def test_one_rank_and_two_ranks_equal_the_eager_model(deep_model, deep_pth, tmp_path):
    """The chain's anchor: energy, forces and per-atom virials of LAMMPS are the eager model's."""
    atoms = small_sic()
    out = deep_model.eager(from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX))
    data = write_data(atoms, tmp_path / "small.data")
    lammps_order = (0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)
    atom_virial = out["atom_virial"].detach().numpy()
    expected_virials = np.stack([atom_virial[:, a, b] for a, b in lammps_order], axis=1)
    for ranks in (1, 2):
        run = lammps(tmp_path / str(ranks), ranks, data, deep_pth, SINGLE_POINT)
        assert run.thermo[0, 1] == pytest.approx(float(out["total_energy"]), rel=1e-10, abs=0.0)
        np.testing.assert_allclose(run.atoms[:, 0:3], out["forces"].detach().numpy(), rtol=0, atol=1e-8)
        assert_close(-run.atoms[:, 4:10] / 1.6021765e6, expected_virials, 1e-10, f"per-atom virials, {ranks} ranks")


@pytest.mark.slow
def test_nve_trajectory_is_the_same_on_1_2_and_4_ranks(deep_pth, tmp_path):
    # 64 atoms in 8.7 Å: on 4 ranks the sub-domains are narrower than the ghost cutoff (6 Å)
    data = write_data(small_sic(), tmp_path / "small.data")
    runs = {ranks: lammps(tmp_path / str(ranks), ranks, data, deep_pth, NVE) for ranks in RANKS}
    one = runs[1]
    assert len(one.thermo) == NVE_STEPS // NVE_THERMO_EVERY + 1
    assert np.abs(one.thermo[:, 1] - one.thermo[0, 1]).max() > 0.1  # eV of potential energy exchanged
    for ranks in RANKS[1:]:
        np.testing.assert_allclose(runs[ranks].thermo, one.thermo, rtol=1e-10, err_msg=f"{ranks} ranks")
        np.testing.assert_allclose(runs[ranks].atoms[:, 0:3], one.atoms[:, 0:3], rtol=0, atol=1e-8)
        np.testing.assert_allclose(runs[ranks].atoms[:, 3:6], one.atoms[:, 3:6], rtol=0, atol=1e-6)


def test_a_user_communication_cutoff_cannot_starve_the_exchange(deep_model, deep_pth, tmp_path):
    """LAMMPS never communicates less than the largest pair cutoff plus the skin, which is all
    the exchange needs: a smaller `comm_modify cutoff` changes nothing."""
    data = write_data(small_sic(), tmp_path / "small.data")
    default = lammps(tmp_path / "default", 2, data, deep_pth, SINGLE_POINT)
    short = lammps(tmp_path / "short", 2, data, deep_pth, "comm_modify cutoff 1.0\n" + SINGLE_POINT)
    assert short.thermo[0, 1] == pytest.approx(default.thermo[0, 1], rel=1e-12, abs=0.0)
    np.testing.assert_allclose(short.atoms[:, :4], default.atoms[:, :4], rtol=0, atol=1e-10)
    assert_close(short.atoms[:, 4:10], default.atoms[:, 4:10], 1e-10, "per-atom virials")


def test_newton_off_is_refused(deep_pth, tmp_path):
    data = write_data(small_sic(), tmp_path / "small.data")
    run = lammps(tmp_path, 2, data, deep_pth, SINGLE_POINT, newton="off", check=False)
    assert (
        "ERROR: pair_style nequip on 2 MPI ranks requires 'newton on' (or 'newton on off'): "
        "forces on ghost atoms are sent to their owners" in run.log
    )
