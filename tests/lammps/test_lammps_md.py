"""Molecular dynamics with pair_style nequip: LAMMPS' velocity Verlet follows ASE's, and
conserves energy."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from lammps_harness import lammps_frame, new_lammps, reference_calculator, setup

TIMESTEP_FS = 1.0
COMPARED_STEPS = 100
TOTAL_STEPS = 2000
CHUNK = 100


@pytest.mark.slow
def test_nve_follows_ase_velocity_verlet_and_conserves_energy(compiled_models):
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

    model_file = str(compiled_models["float64", "aotinductor", "pair_nequip"])
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True)
    atoms.rattle(0.05, seed=6)
    atoms = lammps_frame(atoms)

    lmp = new_lammps()
    try:
        setup(lmp, atoms, ["pair_style nequip", f"pair_coeff * * {model_file} Si C"])
        lmp.commands_list(
            [
                "velocity all create 600 4928459 mom yes rot no dist gaussian",
                "compute unwrapped all property/atom xu yu zu",
                "fix integrate all nve",
                f"timestep {TIMESTEP_FS / 1000}",  # ps
                "thermo_style custom step pe ke etotal",
                "run 0",
            ]
        )

        def by_id(per_atom):  # atom IDs are 1..N in the order of `atoms`
            n = len(atoms)
            return np.array(per_atom[:n])[np.argsort(lmp.numpy.extract_atom("id")[:n])]

        def positions():
            return by_id(lmp.numpy.extract_compute("unwrapped", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))

        atoms.positions = positions()
        # LAMMPS metal velocities are Å/ps
        atoms.set_velocities(by_id(lmp.numpy.extract_atom("v")) / (1000 * units.fs))
        atoms.calc = reference_calculator(model_file)
        dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)

        deviation = 0.0
        for _ in range(COMPARED_STEPS):
            lmp.command("run 1 pre no post no")
            dynamics.run(1)
            deviation = max(deviation, np.abs(positions() - atoms.positions).max())
        assert deviation < 1e-6

        energies = [lmp.get_thermo("etotal")]
        for _ in range((TOTAL_STEPS - COMPARED_STEPS) // CHUNK):
            lmp.command(f"run {CHUNK} pre no post no")
            energies.append(lmp.get_thermo("etotal"))
    finally:
        lmp.close()
    kinetic = 1.5 * len(atoms) * units.kB * 600
    # fluctuations of a 1 fs velocity Verlet, far below the kinetic energy, and no drift
    assert np.ptp(energies) < 1e-3 * kinetic, energies
