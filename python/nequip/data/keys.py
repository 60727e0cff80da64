"""Names of the atomic data dictionary (FILE_CONTRACT §1), shared by every stage."""

from typing import Final

# inputs
POS: Final[str] = "pos"
ATOM_TYPES: Final[str] = "atom_types"
EDGE_INDEX: Final[str] = "edge_index"
CELL: Final[str] = "cell"
EDGE_CELL_SHIFT: Final[str] = "edge_cell_shift"
PBC: Final[str] = "pbc"
BATCH: Final[str] = "batch"
NUM_ATOMS: Final[str] = "num_atoms"
# (N,) bool: the atoms whose energies are summed (a LAMMPS rank's owned atoms); absent: all.
# Forces are still given on every atom: those on the others belong to their owners.
LOCAL_MASK: Final[str] = "local_mask"

# outputs (and labels, under the same names)
ATOMIC_ENERGY: Final[str] = "atomic_energy"
TOTAL_ENERGY: Final[str] = "total_energy"
FORCES: Final[str] = "forces"
STRESS: Final[str] = "stress"
VIRIAL: Final[str] = "virial"
# (N, 3, 3): each edge's virial split half to each of its two atoms; sums to VIRIAL.
ATOM_VIRIAL: Final[str] = "atom_virial"

# outputs of a committee of models (nequip.model.committee), beside the others (their mean):
# (N,) per atom the norm of the standard deviation of the members' force vectors, eV/Å;
# (F, 1) the standard deviation of their total energies, eV; (F, 3, 3) of their virials, eV.
FORCE_DEVIATION: Final[str] = "force_deviation"
ENERGY_DEVIATION: Final[str] = "energy_deviation"
VIRIAL_DEVIATION: Final[str] = "virial_deviation"
DEVIATION_KEYS: Final = (FORCE_DEVIATION, ENERGY_DEVIATION, VIRIAL_DEVIATION)
# training data only: loss weights of each frame (F,) and of each atom's force (N,)
FRAME_WEIGHT: Final[str] = "frame_weight"
FORCE_WEIGHT: Final[str] = "force_weight"

OUTPUT_KEYS: Final = (ATOMIC_ENERGY, TOTAL_ENERGY, FORCES, STRESS, VIRIAL, ATOM_VIRIAL)
LABEL_KEYS: Final = (TOTAL_ENERGY, FORCES, STRESS)
