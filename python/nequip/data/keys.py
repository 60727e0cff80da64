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

# training data only: loss weights of each frame (F,) and of each atom's force (N,)
FRAME_WEIGHT: Final[str] = "frame_weight"
FORCE_WEIGHT: Final[str] = "force_weight"

OUTPUT_KEYS: Final = (ATOMIC_ENERGY, TOTAL_ENERGY, FORCES, STRESS, VIRIAL, ATOM_VIRIAL)
LABEL_KEYS: Final = (TOTAL_ENERGY, FORCES, STRESS)
