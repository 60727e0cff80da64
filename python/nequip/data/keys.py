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

# outputs (and labels, under the same names)
ATOMIC_ENERGY: Final[str] = "atomic_energy"
TOTAL_ENERGY: Final[str] = "total_energy"
FORCES: Final[str] = "forces"
STRESS: Final[str] = "stress"
VIRIAL: Final[str] = "virial"

OUTPUT_KEYS: Final = (ATOMIC_ENERGY, TOTAL_ENERGY, FORCES, STRESS, VIRIAL)
LABEL_KEYS: Final = (TOTAL_ENERGY, FORCES, STRESS)
