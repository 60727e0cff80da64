"""Make a small Cu/Au data set labelled by ASE's EMT potential (a cheap stand-in for DFT).

Each frame is an fcc supercell with a random Au fraction, a lattice constant between Cu's and
Au's (Vegard's law) times a random strain, and rattled positions; labels are EMT's energy,
forces and stress. Used by the demo (examples/demo.py, examples/minimal.yaml) and the tests.

    python examples/make_emt_data.py emt_cu_au.xyz --frames 100 --seed 0
"""

import argparse

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from nequip.utils.atomic_io import atomic_path

LATTICE_CONSTANT = {"Cu": 3.61, "Au": 4.08}


def emt_labelled(atoms):
    """A copy of ``atoms`` with EMT's energy, forces and stress on a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    labels = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


def make_emt_frames(n_frames=60, seed=0, repeat=(2, 2, 2), rattle=0.1, max_strain=0.03):
    """Return ``n_frames`` labelled ase.Atoms (energy, forces, stress on a SinglePointCalculator)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANT["Cu"], cubic=True).repeat(repeat)
        au_fraction = rng.uniform(0.0, 1.0)
        symbols = np.where(rng.uniform(size=len(atoms)) < au_fraction, "Au", "Cu")
        atoms.set_chemical_symbols(symbols.tolist())
        a = (1 - au_fraction) * LATTICE_CONSTANT["Cu"] + au_fraction * LATTICE_CONSTANT["Au"]
        strain = np.eye(3) + rng.uniform(-max_strain, max_strain, size=(3, 3))
        strain = 0.5 * (strain + strain.T)
        atoms.set_cell(atoms.cell[:] * a / LATTICE_CONSTANT["Cu"] @ strain, scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        frames.append(emt_labelled(atoms))
    return frames


def write_emt_data(path, n_frames=60, seed=0, repeat=(2, 2, 2)):
    import ase.io

    frames = make_emt_frames(n_frames=n_frames, seed=seed, repeat=repeat)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return frames


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="extxyz file to write")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, nargs=3, default=(2, 2, 2), help="fcc cubic cell repeats")
    args = parser.parse_args(argv)
    frames = write_emt_data(args.output, n_frames=args.frames, seed=args.seed, repeat=tuple(args.repeat))
    print(f"wrote {len(frames)} frames of {len(frames[0])} atoms to {args.output}")


if __name__ == "__main__":
    main()
