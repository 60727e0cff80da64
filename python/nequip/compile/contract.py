"""What the compiler writes (FILE_CONTRACT §2-§4): modes and file extensions, the flat input and
output order of each AOTInductor target, and the metadata keys it adds to the model's own.

Reading files (and refusing malformed ones) is the C++ runtime's job alone (``nequip._runtime``);
the compiler checks each file it writes by loading it there.
"""

from typing import Dict, Tuple

from nequip.data import keys

# -- modes and file extensions (FILE_CONTRACT §3, §4) --------------------------------------
TORCHSCRIPT = "torchscript"
AOTINDUCTOR = "aotinductor"
EXTENSIONS: Dict[str, str] = {TORCHSCRIPT: ".nequip.pth", AOTINDUCTOR: ".nequip.pt2"}
MODES: Tuple[str, ...] = tuple(EXTENSIONS)
DEVICES: Tuple[str, ...] = ("cpu", "cuda")

# -- AOTInductor targets: flat inputs and outputs, in order (FILE_CONTRACT §4) -------------
AOTI_INPUTS: Tuple[str, ...] = (
    keys.POS,
    keys.EDGE_INDEX,
    keys.ATOM_TYPES,
    keys.CELL,
    keys.EDGE_CELL_SHIFT,
)
# pair_nequip_domain (ours): what LAMMPS on several MPI ranks runs. The whole model takes
# local_mask (the owned atoms, whose energies alone are summed) and gives per-atom virials
# (compute stress/atom); the package also holds the layer-by-layer parts (AOTI_PARTS_KEY).
DOMAIN_TARGET = "pair_nequip_domain"
# batch (the other NequIP release's name and input order): many frames per call, frames,
# atoms and edges all dynamic (TorchSim, nequip-test). Outputs per frame: total_energy,
# stress and virial (F, ...); the other release's batch files give no virial.
BATCH_TARGET = "batch"
BATCH_INPUTS: Tuple[str, ...] = (keys.BATCH, keys.NUM_ATOMS)
TARGET_INPUTS: Dict[str, Tuple[str, ...]] = {
    "ase": AOTI_INPUTS,
    "pair_nequip": AOTI_INPUTS,
    DOMAIN_TARGET: AOTI_INPUTS + (keys.LOCAL_MASK,),
    BATCH_TARGET: AOTI_INPUTS + BATCH_INPUTS,
}
TARGET_OUTPUTS: Dict[str, Tuple[str, ...]] = {
    "ase": (keys.ATOMIC_ENERGY, keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS),
    "pair_nequip": (keys.ATOMIC_ENERGY, keys.FORCES, keys.VIRIAL),
    DOMAIN_TARGET: (keys.ATOMIC_ENERGY, keys.FORCES, keys.VIRIAL, keys.ATOM_VIRIAL),
    BATCH_TARGET: (keys.ATOMIC_ENERGY, keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL),
}
TARGETS: Tuple[str, ...] = tuple(TARGET_OUTPUTS)
# A committee file (nequip.model.Committee) gives the deviations after its target's outputs
# (after TORCHSCRIPT_OUTPUTS in a .pth). Of DOMAIN_TARGET, the whole model gives them (one
# rank), and each member's parts run layer by layer (several ranks: the runtime gives each
# member's forces, the front end the deviations). Not the batch target (one frame per call).
COMMITTEE_OUTPUTS: Tuple[str, ...] = keys.DEVIATION_KEYS
COMMITTEE_TARGETS: Tuple[str, ...] = ("ase", "pair_nequip", DOMAIN_TARGET)
# What our TorchScript files take and give (FILE_CONTRACT §3's five outputs and more): one
# frame, or (batch and num_atoms given) a batch of frames, as every target.
TORCHSCRIPT_INPUTS: Tuple[str, ...] = AOTI_INPUTS + (keys.LOCAL_MASK,) + BATCH_INPUTS
TORCHSCRIPT_OUTPUTS: Tuple[str, ...] = keys.OUTPUT_KEYS

# -- metadata keys -------------------------------------------------------------------------
# FILE_CONTRACT §2, from the model; per_edge_type_cutoff only when the model uses it.
MODEL_DTYPE = "model_dtype"
TYPE_NAMES = "type_names"
NUM_TYPES = "num_types"
R_MAX = "r_max"
ALLOW_TF32 = "allow_tf32"
PER_EDGE_TYPE_CUTOFF = "per_edge_type_cutoff"
MODEL_DTYPES: Tuple[str, ...] = ("float32", "float64")
# Project keys of the model: message-passing layers (and the widths of their outputs).
NUM_LAYERS = "num_layers"
LAYER_FEATURE_WIDTHS = "layer_feature_widths"
# Project key, "selected": the layer parts (a .pt2's layer_k and layer_k_vjp, a .pth's method
# layer) take the rows whose output to compute after their other inputs, and the runtime gives
# them the local nodes and the reference atoms; absent (older files): they compute every node's.
LAYER_ROWS = "layer_rows"
# Project key of a model with a pair potential added to its learned energy ("zbl"; absent: none).
# A file of DOMAIN_TARGET then has the part pair_energy_vjp, a .pth the method pair_energy.
PAIR_POTENTIAL = "pair_potential"
# FILE_CONTRACT §4: field names of the flat AOTInductor interface, space-separated.
AOTI_INPUTS_KEY = "nequip_aoti_inputs"
AOTI_OUTPUTS_KEY = "nequip_aoti_outputs"
# Ours, on .pt2 files of DOMAIN_TARGET: the names of the AOTI models of the layer-by-layer
# parts (aotinductor.part_names), space-separated, beside the whole model "model".
AOTI_PARTS_KEY = "nequip_aoti_parts"
# The operators of NequIP's kernel library a .pt2 calls (space-separated qualified names, such as
# nequip::message_forward_v1), absent from portable files: the runtime refuses a file calling
# one it does not register.
OPERATORS_KEY = "nequip_operators"
# Ours, on TorchScript files: the input and output fields, space-separated.
TORCHSCRIPT_INPUTS_KEY = "nequip_torchscript_inputs"
TORCHSCRIPT_OUTPUTS_KEY = "nequip_torchscript_outputs"
# Provenance (the contract lets producers add keys, never change the meaning of §2's).
NEQUIP_VERSION = "nequip_version"
TORCH_VERSION = "torch_version"
E3NN_VERSION = "e3nn_version"
COMPILE_TARGET = "compile_target"
# The device type a file was compiled for ("cpu" or "cuda"); the runtime refuses it on another.
# (A .pt2 also carries torch's own AOTI_DEVICE_KEY; a .pth has only this.)
COMPILE_DEVICE = "compile_device"
# Ours, on committee files (nequip.model.committee): the number of models (at least 2), and
# what gives the energy, forces and stress: "mean" of the models or the "first" one.
COMMITTEE_SIZE = "committee_size"
COMMITTEE_DRIVE = "committee_drive"
# Ours, on committee files whose members run layer by layer: each member's
# LAYER_FEATURE_WIDTHS, the members' joined by "; ". A .pt2 of DOMAIN_TARGET names member k's
# parts "member<k>_" + part name (committee_part_names).
COMMITTEE_LAYER_FEATURE_WIDTHS = "committee_layer_feature_widths"
