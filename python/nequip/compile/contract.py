"""The compiled-file contract (FILE_CONTRACT §2-§4) in one place: metadata keys, their
format, the flat input/output order of each AOTInductor target, and file extensions.

Both the compiler (which writes metadata) and the loader (which reads files possibly made by
other NequIP producers) validate through :func:`parse_metadata`, so a file we write is a file
we can read, and a malformed file fails with a message naming the file and the key.
"""

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

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
# pair_nequip_domain (ours): a LAMMPS rank's owned atoms plus the ghosts they need, as plain
# atoms; local_mask picks the owned ones, whose energies alone are summed. Runs on any number
# of MPI ranks and gives per-atom virials (compute stress/atom).
DOMAIN_TARGET = "pair_nequip_domain"
TARGET_INPUTS: Dict[str, Tuple[str, ...]] = {
    "ase": AOTI_INPUTS,
    "pair_nequip": AOTI_INPUTS,
    DOMAIN_TARGET: AOTI_INPUTS + (keys.LOCAL_MASK,),
}
TARGET_OUTPUTS: Dict[str, Tuple[str, ...]] = {
    "ase": (keys.ATOMIC_ENERGY, keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS),
    "pair_nequip": (keys.ATOMIC_ENERGY, keys.FORCES, keys.VIRIAL),
    DOMAIN_TARGET: (keys.ATOMIC_ENERGY, keys.FORCES, keys.VIRIAL, keys.ATOM_VIRIAL),
}
TARGETS: Tuple[str, ...] = tuple(TARGET_OUTPUTS)
# Files whose metadata lacks nequip_aoti_inputs/outputs (older producers) use this target.
LEGACY_TARGET = "pair_nequip"
# FILE_CONTRACT §3: what every TorchScript file gives (its inputs are AOTI_INPUTS) ...
CONTRACT_TORCHSCRIPT_OUTPUTS: Tuple[str, ...] = (
    keys.ATOMIC_ENERGY,
    keys.TOTAL_ENERGY,
    keys.FORCES,
    keys.STRESS,
    keys.VIRIAL,
)
# ... and what ours take and give.
TORCHSCRIPT_INPUTS: Tuple[str, ...] = AOTI_INPUTS + (keys.LOCAL_MASK,)
TORCHSCRIPT_OUTPUTS: Tuple[str, ...] = keys.OUTPUT_KEYS
# Optional inputs a compiled file may take; the others are required.
OPTIONAL_INPUTS: Tuple[str, ...] = (keys.LOCAL_MASK,)

# -- metadata keys ---------------------------------------------------------------------------
# FILE_CONTRACT §2: the model's own metadata, required in every compiled file ...
MODEL_DTYPE = "model_dtype"
TYPE_NAMES = "type_names"
NUM_TYPES = "num_types"
R_MAX = "r_max"
ALLOW_TF32 = "allow_tf32"
REQUIRED_KEYS: Tuple[str, ...] = (MODEL_DTYPE, TYPE_NAMES, NUM_TYPES, R_MAX, ALLOW_TF32)
# ... and the one optional key (absent: every type pair uses r_max).
PER_EDGE_TYPE_CUTOFF = "per_edge_type_cutoff"
MODEL_KEYS: Tuple[str, ...] = REQUIRED_KEYS + (PER_EDGE_TYPE_CUTOFF,)
# FILE_CONTRACT §4: field names of the flat AOTInductor interface, space-separated.
AOTI_INPUTS_KEY = "nequip_aoti_inputs"
AOTI_OUTPUTS_KEY = "nequip_aoti_outputs"
# Ours, on TorchScript files: the input and output fields, space-separated (absent: §3's).
TORCHSCRIPT_INPUTS_KEY = "nequip_torchscript_inputs"
TORCHSCRIPT_OUTPUTS_KEY = "nequip_torchscript_outputs"
NUM_LAYERS = "num_layers"
# Our own keys (the contract lets producers add keys, never change the meaning of §2's).
NEQUIP_VERSION = "nequip_version"
TORCH_VERSION = "torch_version"
E3NN_VERSION = "e3nn_version"
COMPILE_TARGET = "compile_target"
PROVENANCE_KEYS: Tuple[str, ...] = (NEQUIP_VERSION, TORCH_VERSION, E3NN_VERSION)

MODEL_DTYPES: Tuple[str, ...] = ("float32", "float64")


class MetadataError(ValueError):
    """A compiled file's (or a model's) metadata lacks a required key or has a malformed one."""


@dataclass(frozen=True)
class ModelMetadata:
    """FILE_CONTRACT §2 metadata, parsed and checked."""

    model_dtype: str
    type_names: Tuple[str, ...]
    r_max: float
    allow_tf32: bool
    # (num_types, num_types) row-major, row = centre type; None: every pair uses r_max
    per_edge_type_cutoff: Optional[Tuple[Tuple[float, ...], ...]] = None

    @property
    def num_types(self) -> int:
        return len(self.type_names)


def parse_metadata(metadata: Mapping[str, str], source: str) -> ModelMetadata:
    """Check ``metadata`` against FILE_CONTRACT §2 and return it parsed.

    ``source`` names where the metadata came from (a file path, or "the model") and opens
    every error message, together with the offending key.
    """

    def fail(key: str, expected: str) -> MetadataError:
        return MetadataError(
            f"{source}: metadata key '{key}' is malformed: expected {expected}, "
            f"got {metadata[key]!r}"
        )

    for key in REQUIRED_KEYS:
        if key not in metadata:
            raise MetadataError(f"{source}: required metadata key '{key}' is missing")
        if not isinstance(metadata[key], str):
            raise fail(key, "a string")

    model_dtype = metadata[MODEL_DTYPE]
    if model_dtype not in MODEL_DTYPES:
        raise fail(MODEL_DTYPE, " or ".join(repr(d) for d in MODEL_DTYPES))

    type_names = tuple(metadata[TYPE_NAMES].split(" "))
    if not all(name and name.isprintable() for name in type_names):
        raise fail(TYPE_NAMES, "type names joined by single spaces")
    if len(set(type_names)) != len(type_names):
        raise fail(TYPE_NAMES, "distinct type names")

    num_types = _parse_int(metadata[NUM_TYPES])
    if num_types != len(type_names):
        raise fail(NUM_TYPES, f"the number of type names ({len(type_names)})")

    r_max = _parse_float(metadata[R_MAX])
    if r_max is None or not r_max > 0:
        raise fail(R_MAX, "a positive decimal number")

    if metadata[ALLOW_TF32] not in ("0", "1"):
        raise fail(ALLOW_TF32, "'0' or '1'")

    per_edge_type_cutoff = None
    if PER_EDGE_TYPE_CUTOFF in metadata:
        expected = (
            f"{num_types}x{num_types} = {num_types * num_types} space-separated numbers "
            f"in (0, r_max = {r_max}]"
        )
        fields = metadata[PER_EDGE_TYPE_CUTOFF].split(" ")
        values = [_parse_float(field) for field in fields]
        if len(values) != num_types * num_types or not all(
            v is not None and 0 < v <= r_max for v in values
        ):
            raise fail(PER_EDGE_TYPE_CUTOFF, expected)
        per_edge_type_cutoff = tuple(
            tuple(values[row * num_types : (row + 1) * num_types]) for row in range(num_types)
        )

    return ModelMetadata(
        model_dtype=model_dtype,
        type_names=type_names,
        r_max=r_max,
        allow_tf32=metadata[ALLOW_TF32] == "1",
        per_edge_type_cutoff=per_edge_type_cutoff,
    )


def parse_aoti_fields(metadata: Mapping[str, str], source: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The flat input and output field names of an AOTInductor file.

    Files without ``nequip_aoti_inputs``/``nequip_aoti_outputs`` use the ``pair_nequip`` order.
    """
    has_inputs, has_outputs = AOTI_INPUTS_KEY in metadata, AOTI_OUTPUTS_KEY in metadata
    if not has_inputs and not has_outputs:
        return AOTI_INPUTS, TARGET_OUTPUTS[LEGACY_TARGET]
    for key, present in ((AOTI_INPUTS_KEY, has_inputs), (AOTI_OUTPUTS_KEY, has_outputs)):
        if not present:
            raise MetadataError(
                f"{source}: metadata key '{key}' is missing "
                f"(a file must have both {AOTI_INPUTS_KEY} and {AOTI_OUTPUTS_KEY}, or neither)"
            )
    return _checked_fields(metadata, AOTI_INPUTS_KEY, AOTI_OUTPUTS_KEY, source)


def parse_torchscript_fields(metadata: Mapping[str, str], source: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The input and output field names of a TorchScript file.

    Files without ``nequip_torchscript_inputs``/``_outputs`` (other producers, older files) take
    and give FILE_CONTRACT §3's five fields.
    """
    defaults = {
        TORCHSCRIPT_INPUTS_KEY: " ".join(AOTI_INPUTS),
        TORCHSCRIPT_OUTPUTS_KEY: " ".join(CONTRACT_TORCHSCRIPT_OUTPUTS),
    }
    return _checked_fields({**defaults, **metadata}, TORCHSCRIPT_INPUTS_KEY, TORCHSCRIPT_OUTPUTS_KEY, source)


def _checked_fields(
    metadata: Mapping[str, str], inputs_key: str, outputs_key: str, source: str
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The field names under ``inputs_key`` and ``outputs_key``: every required input, perhaps
    optional ones, and distinct outputs the contract knows."""
    inputs = tuple(metadata[inputs_key].split(" "))
    required = set(AOTI_INPUTS)
    if len(set(inputs)) != len(inputs) or not required <= set(inputs) <= required | set(OPTIONAL_INPUTS):
        raise MetadataError(
            f"{source}: metadata key '{inputs_key}' is malformed: expected the fields "
            f"{' '.join(AOTI_INPUTS)} (in any order), optionally with {' '.join(OPTIONAL_INPUTS)}, "
            f"got {metadata[inputs_key]!r}"
        )
    outputs = tuple(metadata[outputs_key].split(" "))
    if not outputs or len(set(outputs)) != len(outputs) or not set(outputs) <= set(keys.OUTPUT_KEYS):
        raise MetadataError(
            f"{source}: metadata key '{outputs_key}' is malformed: expected distinct "
            f"fields among {' '.join(keys.OUTPUT_KEYS)}, got {metadata[outputs_key]!r}"
        )
    return inputs, outputs


def _parse_int(text: str) -> Optional[int]:
    # decimal digits only: int() would also accept " 2", "+2", "2_0"
    return int(text) if text.isascii() and text.isdigit() else None


def _parse_float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and text == text.strip() else None
