"""Compile an eager NequIP model into a ``*.nequip.pth`` (TorchScript) or ``*.nequip.pt2``
(AOTInductor) file, check the file against the eager model, and write it atomically."""

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Union

import e3nn
import torch

import nequip
from nequip.data import keys

from . import aotinductor, torchscript
from .contract import (
    AOTI_INPUTS_KEY,
    AOTI_OUTPUTS_KEY,
    AOTINDUCTOR,
    COMPILE_TARGET,
    E3NN_VERSION,
    EXTENSIONS,
    MODES,
    NEQUIP_VERSION,
    TARGET_INPUTS,
    TARGET_OUTPUTS,
    TARGETS,
    TORCH_VERSION,
    TORCHSCRIPT,
    TORCHSCRIPT_INPUTS,
    TORCHSCRIPT_INPUTS_KEY,
    TORCHSCRIPT_OUTPUTS,
    TORCHSCRIPT_OUTPUTS_KEY,
    parse_metadata,
)
from .loader import CompiledModel, check_device

logger = logging.getLogger(__name__)

# How closely a compiled file must reproduce the eager model, output by output, as
# relative_error(compiled, eager).
TOLERANCE: Dict[str, float] = {"float64": 1e-10, "float32": 1e-5}


class CompileError(RuntimeError):
    """Compilation ran but its result cannot be trusted (it disagrees with the eager model)."""


def check_arguments(out_path: Union[str, Path], mode: str, device: str, target: Optional[str]) -> None:
    """Refuse a bad request before any work is done: the mode, target and device must be
    known, the device available, and the output extension must match the mode."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    if mode == AOTINDUCTOR and target is None:
        raise ValueError(
            f"mode {AOTINDUCTOR} needs a target (the order of the flat inputs and outputs): "
            f"one of {', '.join(TARGETS)}"
        )
    extension = EXTENSIONS[mode]
    if not Path(out_path).name.endswith(extension) or Path(out_path).name == extension:
        raise ValueError(
            f"output file {str(out_path)!r} does not match mode {mode}: "
            f"its name must end in '{extension}'"
        )
    check_device(device)


def compile_model(
    model: torch.nn.Module,
    out_path: Union[str, Path],
    mode: str,
    device: str = "cpu",
    target: Optional[str] = None,
    example_data: Optional[Dict[str, torch.Tensor]] = None,
) -> Path:
    """Compile ``model`` to ``out_path`` and return the path.

    Args:
        model: an eager NequIP model (``forward(Dict[str, Tensor]) -> Dict[str, Tensor]``,
            ``metadata()`` per FILE_CONTRACT §2), computing forces and stress.
        out_path: ``*.nequip.pth`` for ``mode="torchscript"``, ``*.nequip.pt2`` for
            ``mode="aotinductor"``.
        device: ``"cpu"`` or ``"cuda"``: where the compiled file will run.
        target: for AOTInductor, ``"ase"``, ``"pair_nequip"`` (FILE_CONTRACT §4, the order
            of the flat inputs and outputs) or ``"pair_nequip_domain"`` (LAMMPS on several MPI
            ranks, per-atom virials). A TorchScript file serves every target; a target given
            with it is only checked.
        example_data: one frame (FILE_CONTRACT §1) on which the compiled file must reproduce
            the eager model; packages carry one. Default: ``nequip.package.synthetic_frame``
            for the model's types and cutoffs.

    The model is moved to ``device`` and put in eval mode.

    Raises ValueError for a bad request (before any work), MetadataError (a ValueError) for
    a model whose metadata breaks FILE_CONTRACT §2, and CompileError when the compiled file
    disagrees with the eager model. No output file is left behind on any failure.
    """
    start = time.perf_counter()
    check_arguments(out_path, mode, device, target)
    out_path = Path(out_path)
    torch_device = torch.device(device)

    # The model's metadata travels unchanged (FILE_CONTRACT §2 and whatever else it adds);
    # the versions default to the ones compiling, then the AOTInductor interface keys.
    model_metadata = model.metadata()
    parsed = parse_metadata(model_metadata, "the model")
    metadata = {
        NEQUIP_VERSION: nequip.__version__,
        TORCH_VERSION: torch.__version__,
        E3NN_VERSION: e3nn.__version__,
    }
    metadata.update(model_metadata)
    if mode == AOTINDUCTOR:
        metadata.update(
            {
                COMPILE_TARGET: target,
                AOTI_INPUTS_KEY: " ".join(TARGET_INPUTS[target]),
                AOTI_OUTPUTS_KEY: " ".join(TARGET_OUTPUTS[target]),
            }
        )
    else:
        metadata.update(
            {
                TORCHSCRIPT_INPUTS_KEY: " ".join(TORCHSCRIPT_INPUTS),
                TORCHSCRIPT_OUTPUTS_KEY: " ".join(TORCHSCRIPT_OUTPUTS),
            }
        )
    if example_data is None:
        from nequip.package import synthetic_frame  # the package stack is heavy: only on demand

        example_data = synthetic_frame(parsed.type_names, parsed.r_max, _flat(parsed.per_edge_type_cutoff))

    model = model.to(torch_device).eval()
    if not (getattr(model, "compute_forces", True) and getattr(model, "compute_stress", True)):
        raise ValueError("the model must compute forces and stress (compute_forces and compute_stress set)")

    def log(message: str) -> None:
        logger.info("[%6.1f s] %s", time.perf_counter() - start, message)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The file is staged under its final name (aoti_load_package insists on the .pt2 suffix,
    # which rules out atomic_path's temporary name), checked, then renamed onto out_path in
    # one step; the staging directory, and anything in it, goes on any failure.
    with tempfile.TemporaryDirectory(prefix=".nequip-compile-", dir=out_path.parent) as staging:
        staged = Path(staging) / out_path.name
        if mode == TORCHSCRIPT:
            log("scripting the model (TorchScript)")
            torchscript.save(torchscript.script_model(model), staged, metadata)
        else:
            exported = aotinductor.export(model, target, parsed.num_types, torch_device, log)
            log("compiling C++ (AOTInductor), the slow step")
            aotinductor.package(exported, staged, metadata)

        log("checking the compiled file against the eager model on the example data")
        compiled = CompiledModel(staged, device, mode=mode)
        _check_agreement(model, compiled, example_data, parsed.model_dtype)
        os.replace(staged, out_path)

    log(f"wrote {out_path} ({mode}" + (f", target {target}" if target else "") + ")")
    logger.info("compiled in %.1f s", time.perf_counter() - start)
    return out_path


def _flat(table):
    return None if table is None else [value for row in table for value in row]


def _check_agreement(
    model: torch.nn.Module, compiled: CompiledModel, example_data: Dict[str, torch.Tensor], model_dtype: str
) -> None:
    """Raise CompileError unless every output of ``compiled`` matches the eager model."""
    data = dict(example_data)
    if keys.LOCAL_MASK in compiled.inputs and keys.LOCAL_MASK not in data:
        # the mask must reach the energy sum: check with every other atom not local
        data[keys.LOCAL_MASK] = torch.arange(data[keys.POS].shape[0]) % 2 == 0
    inputs = compiled.prepare_inputs(data)
    expected = model(dict(inputs))
    got = compiled(inputs)
    for name, value in got.items():
        error = relative_error(value, expected[name])
        if value.dtype != torch.float64 or not error <= TOLERANCE[model_dtype]:
            raise CompileError(
                f"the compiled model disagrees with the eager model on '{name}': "
                f"relative error {error:.3g} (tolerance {TOLERANCE[model_dtype]:g}), "
                f"shape {tuple(value.shape)} (eager {tuple(expected[name].shape)}), dtype {value.dtype}"
            )


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max(1, max |reference|), the measure TOLERANCE bounds.

    Relative to the largest entry rather than entry by entry, so that near-zero force
    components are not held to an impossible standard; NaN matches NaN (the stress of a
    cell without volume). inf for a shape mismatch or a NaN on one side only.
    """
    if value.shape != reference.shape:
        return math.inf
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    if not torch.equal(value.isnan(), reference.isnan()):
        return math.inf
    if value.numel() == 0:
        return 0.0
    scale = max(1.0, float(reference.nan_to_num(0.0).abs().max()))
    return float((value - reference).nan_to_num(0.0).abs().max()) / scale
