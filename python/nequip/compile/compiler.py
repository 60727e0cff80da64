"""Compile an eager NequIP model into a ``*.nequip.pth`` (TorchScript) or ``*.nequip.pt2``
(AOTInductor) file, check the file on the C++ runtime against the eager model, and write it
atomically."""

import errno
import io
import logging
import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import e3nn
import torch

import nequip
from nequip import _runtime
from nequip.data import keys
from nequip.utils.devices import torch_device
from nequip.utils.processes import is_running

from . import aotinductor, torchscript
from .compile_workers import compile_processes
from .contract import (
    AOTI_INPUTS_KEY,
    AOTI_PARTS_KEY,
    AOTI_OUTPUTS_KEY,
    AOTINDUCTOR,
    ALLOW_TF32,
    COMMITTEE_LAYER_FEATURE_WIDTHS,
    COMMITTEE_OUTPUTS,
    COMMITTEE_SIZE,
    COMMITTEE_TARGETS,
    COMPILE_DEVICE,
    COMPILE_TARGET,
    DOMAIN_TARGET,
    E3NN_VERSION,
    EXTENSIONS,
    MODES,
    NEQUIP_VERSION,
    LAYER_FEATURE_WIDTHS,
    OPERATORS_KEY,
    TARGET_INPUTS,
    TARGET_OUTPUTS,
    TARGETS,
    TORCH_VERSION,
    TORCHSCRIPT,
    TORCHSCRIPT_INPUTS,
    TORCHSCRIPT_INPUTS_KEY,
    TORCHSCRIPT_OUTPUTS,
    TORCHSCRIPT_OUTPUTS_KEY,
)
from nequip.inference.compiled import CompiledModel
from nequip.inference.opened import has_volume
from nequip.load import check_weights_finite
from nequip.nn.message_passing import CPU_KERNELS, INDUCTOR, cpu_kernels_missing, scripted_with_kernels

logger = logging.getLogger(__name__)

# How closely a compiled file must reproduce the eager model, output by output, as
# relative_error(compiled, eager).
TOLERANCE: Dict[str, float] = {"float64": 1e-10, "float32": 1e-5}
# With TensorFloat-32 matmuls (--tf32, CUDA): 10 bits of mantissa in every matmul, on both sides.
TF32_TOLERANCE = 1e-2

# Files are staged in a directory beside the output named after the compiling process, so a
# later compile can tell the leftovers of a killed one (its process gone) from a running one.
_STAGING_PREFIX = ".nequip-compile-"
_STAGING_PID = re.compile(re.escape(_STAGING_PREFIX) + r"(\d+)-")


# The OS errors of a write that failed for want of room or permission.
_WRITE_ERRNOS = (errno.EFBIG, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class CompileError(RuntimeError):
    """Compilation ran but its result cannot be trusted (it disagrees with the eager model)."""


class MetadataError(ValueError):
    """The model's metadata would make a file that readers refuse (FILE_CONTRACT §2)."""


class WriteError(RuntimeError):
    """The compiled file could not be written (disk full, file too large, no permission)."""


def check_arguments(
    out_path: Union[str, Path], mode: str, device: str, target: Optional[str], tf32: bool = False
) -> None:
    """Refuse a bad request before any work is done: the mode, target and device must be
    known, the device available, TF32 asked for a CUDA device only, and the output extension
    must match the mode, and NEQUIP_COMPILE_WORKERS, where it is read, a number."""
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
    if torch_device(device).type != "cuda" and tf32:
        raise ValueError(
            f"TF32 (TensorFloat-32 matmuls, --tf32) is a CUDA setting, but the device is {str(device)!r}: "
            "drop --tf32, or compile with --device cuda"
        )
    if mode == AOTINDUCTOR and target == DOMAIN_TARGET:
        compile_processes()  # NEQUIP_COMPILE_WORKERS, if set, is a number
    _check_writable_place(Path(out_path))


def check_committee_arguments(
    committee_size: int, mode: str, target: Optional[str], drive: Optional[str] = None
) -> None:
    """Refuse, before any model is loaded, a committee (``committee_size`` > 1 models) for a
    file that cannot give its deviations (an AOTInductor file of target batch, several frames
    per call), an unknown ``drive`` (nequip.model.committee.DRIVES), and a drive given for one
    model."""
    from nequip.model.committee import DRIVES

    if drive is not None and drive not in DRIVES:
        raise ValueError(f"unknown committee drive {drive!r}: expected one of {', '.join(DRIVES)}")
    if drive is not None and committee_size < 2:
        raise ValueError(
            "a committee drive (--committee-drive) chooses among several models (a committee); got one model"
        )
    if committee_size > 1 and mode == AOTINDUCTOR and target not in COMMITTEE_TARGETS:
        raise ValueError(
            f"a committee cannot be compiled for target {target}: it takes one frame per call, which "
            f"gives its deviations; compile it for target {', '.join(COMMITTEE_TARGETS)}"
        )


def _check_writable_place(out_path: Path) -> None:
    """Refuse an output that is a directory or lies below a file, before any work."""
    if out_path.is_dir():
        raise ValueError(f"cannot write {out_path}: it is a directory")
    existing = next(parent for parent in out_path.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write {out_path}: {existing} is not a directory")


class WrittenMetadata(NamedTuple):
    """What compiling needs of the model's metadata, once it is known to be readable."""

    model_dtype: str
    type_names: Tuple[str, ...]
    r_max: float
    per_edge_type_cutoff: Optional[List[float]]  # num_types**2, row-major, or None


def check_model_metadata(metadata: Mapping[str, str]) -> WrittenMetadata:
    """Refuse metadata that the C++ reader would refuse (FILE_CONTRACT §2 and the project's
    keys), before the slow compile, by asking that reader (``_runtime.check_metadata``): one
    check, one message. Every value must also be printable ASCII text, as the writer owes every
    reader; the compiled file is loaded by the reader before it is written in any case.

    Messages read ``the model: metadata key '<key>' ...``.
    """
    for key, value in metadata.items():
        if not (isinstance(value, str) and value.isascii() and value.isprintable()):
            raise MetadataError(f"the model: metadata key '{key}' must be printable ASCII text, got {value!r}")
    try:
        parsed = _runtime.check_metadata(dict(metadata), "the model")
    except _runtime.ModelFileError as error:
        raise MetadataError(str(error)) from None
    return WrittenMetadata(
        parsed["model_dtype"], tuple(parsed["type_names"]), parsed["r_max"], parsed["per_edge_type_cutoff"]
    )


def compile_model(
    model: torch.nn.Module,
    out_path: Union[str, Path],
    mode: str,
    device: str = "cpu",
    target: Optional[str] = None,
    example_data: Optional[Dict[str, torch.Tensor]] = None,
    tf32: bool = False,
    portable: bool = False,
) -> Path:
    """Compile ``model`` to ``out_path`` and return the path.

    Args:
        model: an eager NequIP model (``forward(Dict[str, Tensor]) -> Dict[str, Tensor]``,
            ``metadata()`` per FILE_CONTRACT §2), computing forces and stress.
        out_path: ``*.nequip.pth`` for ``mode="torchscript"``, ``*.nequip.pt2`` for
            ``mode="aotinductor"``.
        device: ``"cpu"`` or ``"cuda"``: where the compiled file will run.
        target: for AOTInductor, ``"ase"``, ``"pair_nequip"`` (FILE_CONTRACT §4, the order
            of the flat inputs and outputs), ``"pair_nequip_domain"`` (LAMMPS on several MPI
            ranks, per-atom virials) or ``"batch"`` (many frames per call: TorchSim). A
            TorchScript file serves every target, batches included; a target given with it is
            only checked.
        example_data: one frame (FILE_CONTRACT §1) on which the compiled file must reproduce
            the eager model; packages carry one. Default: ``nequip.data.synthetic_frame``
            for the model's types and cutoffs.
        tf32: let CUDA matmuls use TensorFloat-32 (faster, about 3 significant digits): recorded
            as ``allow_tf32 = 1``, which the runtime honours; the self-check then allows a
            relative error of ``TF32_TOLERANCE``. CUDA only.
        portable: on a CPU, a file of torch operations alone, which any NequIP runtime can run
            (FILE_CONTRACT §4). By default the message passing's node sums and their derivatives
            call the C++ kernels of this runtime's library instead (faster; metadata
            ``nequip_operators``, refused by a runtime without them). CUDA files are always
            portable.

    The model is moved to ``device`` and put in eval mode. The file records the device type
    (``compile_device``); the runtime runs it on that type of device only.

    Raises ValueError for a bad request or model (before any work), MetadataError (a
    ValueError) for a model whose metadata readers would refuse, CompileError when the
    compiled file disagrees with the eager model (or the runtime refuses it), WriteError when
    it cannot be written. No output file or staging directory is left behind on any failure.
    """
    start = time.perf_counter()
    check_arguments(out_path, mode, device, target, tf32)
    out_path = Path(out_path)
    torch_device = torch.device(device)

    # The model's metadata travels unchanged (FILE_CONTRACT §2 and whatever else it adds);
    # the versions default to the ones compiling, then the interface keys.
    model_metadata = model.metadata()
    written = check_model_metadata(model_metadata)
    committee = COMMITTEE_SIZE in model_metadata  # nequip.model.Committee
    check_committee_arguments(2 if committee else 1, mode, target)
    extra_outputs = COMMITTEE_OUTPUTS if committee else ()
    check_weights_finite(model)
    metadata = {
        NEQUIP_VERSION: nequip.__version__,
        TORCH_VERSION: torch.__version__,
        E3NN_VERSION: e3nn.__version__,
    }
    metadata.update(model_metadata)
    metadata[ALLOW_TF32] = "1" if tf32 else "0"
    metadata[COMPILE_DEVICE] = torch_device.type
    if mode == AOTINDUCTOR:
        metadata.update(
            {
                COMPILE_TARGET: target,
                AOTI_INPUTS_KEY: " ".join(TARGET_INPUTS[target]),
                AOTI_OUTPUTS_KEY: " ".join(TARGET_OUTPUTS[target] + extra_outputs),
            }
        )
        if target == DOMAIN_TARGET:
            metadata[AOTI_PARTS_KEY] = " ".join(aotinductor.domain_part_names(model))
    else:
        metadata.update(
            {
                TORCHSCRIPT_INPUTS_KEY: " ".join(TORCHSCRIPT_INPUTS),
                TORCHSCRIPT_OUTPUTS_KEY: " ".join(TORCHSCRIPT_OUTPUTS + extra_outputs),
            }
        )
        if not getattr(model, "torchscript_layer_parts", True):
            # a model whose parts TorchScript cannot compile (one of another NequIP release): the
            # file runs whole, and the runtime offers a layer-by-layer run only where this key is
            metadata.pop(LAYER_FEATURE_WIDTHS, None)
            metadata.pop(COMMITTEE_LAYER_FEATURE_WIDTHS, None)
    if example_data is None:
        from nequip.data import synthetic_frame  # nequip.data (and ase) only on demand

        example_data = synthetic_frame(written.type_names, written.r_max, written.per_edge_type_cutoff)

    model = model.to(torch_device).eval()
    if not (getattr(model, "compute_forces", True) and getattr(model, "compute_stress", True)):
        raise ValueError("the model must compute forces and stress (compute_forces and compute_stress set)")

    def log(message: str) -> None:
        logger.info("[%6.1f s] %s", time.perf_counter() - start, message)

    with _writing(out_path):
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out_path.parent)
        staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=out_path.parent)
    # The file is staged under its final name (the runtime tells the format by the suffix,
    # which rules out atomic_path's temporary name), checked, then renamed onto out_path in
    # one step; the staging directory, and anything in it, goes on any failure.
    try:
        # tracing, compiling and the eager side of the check use the file's matmul precision
        with _tf32_matmuls(tf32):
            staged = Path(staging) / out_path.name
            # torch writes the archive into memory and we write that to disk: a failed write in
            # torch's archive writer throws from its destructor, which aborts the process.
            archive = io.BytesIO()
            kernels = torch_device.type == "cpu" and not portable
            if kernels and cpu_kernels_missing() is not None:
                raise CompileError(
                    f"the message passing's kernels cannot be compiled in: {cpu_kernels_missing()}; "
                    "compile a portable file (nequip-compile --portable)"
                )
            if mode == TORCHSCRIPT:
                log("scripting the model (TorchScript)")
                with scripted_with_kernels(model) if kernels else nullcontext():
                    scripted = torchscript.script_model(model)
                operators = torchscript.operators_called(scripted)
                if operators:
                    metadata[OPERATORS_KEY] = " ".join(operators)
                torchscript.save(scripted, archive, metadata)
                del scripted
            else:
                backend = CPU_KERNELS if kernels else INDUCTOR
                with aotinductor.traced_message_backend(backend):
                    exported = aotinductor.export(
                        model, target, len(written.type_names), torch_device, log,
                        TARGET_OUTPUTS[target] + extra_outputs,
                    )  # fmt: skip
                    parts = None
                    if target == DOMAIN_TARGET:
                        parts = aotinductor.export_domain_parts(model, len(written.type_names), torch_device, log)
                operators = aotinductor.operators_called([exported, *(parts or {}).values()])
                if operators:
                    metadata[OPERATORS_KEY] = " ".join(operators)
                log("compiling C++ (AOTInductor), the slow step")
                try:
                    if parts is None:
                        aotinductor.package(exported, archive, metadata)
                    else:
                        aotinductor.package_with_parts(exported, parts, archive, metadata, log)
                except Exception as error:
                    _raise_if_inductor_could_not_write(error)
                    raise
            with _writing(out_path):
                with open(staged, "wb") as file:
                    file.write(archive.getbuffer())
                record_content_hash(staged)
                with open(staged, "rb+") as file:
                    os.fsync(file.fileno())
            del archive

            log("checking the compiled file against the eager model on the example data, on the C++ runtime")
            try:
                compiled = CompiledModel(staged, device)
            except _runtime.Error as error:
                raise CompileError(f"the C++ runtime refuses the compiled file: {error}") from error
            tolerance = TF32_TOLERANCE if tf32 else TOLERANCE[written.model_dtype]
            _check_agreement(model, compiled, example_data, tolerance)
            with _writing(out_path):
                os.replace(staged, out_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    log(f"wrote {out_path} ({mode}" + (f", target {target}" if target else "") + ")")
    logger.info("compiled in %.1f s", time.perf_counter() - start)
    return out_path


def record_content_hash(path: Path) -> None:
    """Add to the compiled file at ``path`` the content hash that the runtime verifies before
    it uses anything of the file (docs/files.md): every record's bytes and name, computed by the
    runtime (``_runtime.content_hash``, the reader's own definition) and stored as one more
    record of the archive (``_runtime.CONTENT_HASH_RECORD``, below its top directory)."""
    digest = _runtime.content_hash(str(path))
    with zipfile.ZipFile(path, "a") as archive:
        top = archive.namelist()[0].split("/", 1)[0]
        archive.writestr(f"{top}/{_runtime.CONTENT_HASH_RECORD}", digest)


def _raise_if_inductor_could_not_write(error: BaseException) -> None:
    """A one-line WriteError, when inductor failed writing its own files on a full disk (or past
    a file-size limit): its generated code and libraries, in its cache directory (inductor wraps
    the OSError), or the C++ compiler's output (a C++ compile error carrying the compiler's 70
    lines, of which the one that names the failed write is kept)."""
    from nequip.utils.torch_internals import cpp_compiler_output, inductor_cache_dir

    cause: Optional[BaseException] = error
    while cause is not None and not isinstance(cause, OSError) and cpp_compiler_output(cause) is None:
        cause = getattr(cause, "inner_exception", None) or cause.__cause__
    if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
        place = cause.filename or f"AOTInductor's generated code in {inductor_cache_dir()}"
        raise WriteError(f"cannot write {place}: {cause.strerror or cause}") from error
    output = None if cause is None else cpp_compiler_output(cause)
    if output is not None:
        reasons = [os.strerror(number) for number in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)]
        lines = [line.strip() for line in output.splitlines()]
        failed = next((line for line in lines if any(reason in line for reason in reasons)), None)
        if failed is not None:
            raise WriteError(
                f"cannot write AOTInductor's compiled code (the C++ compiler: {failed}): free space "
                f"on that disk, or set TMPDIR (the compiler's temporary files) and "
                f"TORCHINDUCTOR_CACHE_DIR (now {inductor_cache_dir()}) to a disk with room"
            ) from error


@contextmanager
def _tf32_matmuls(enabled: bool):
    """CUDA matmuls (and convolutions) in TensorFloat-32 or not, restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def _writing(path: Path):
    """Turn an OSError while writing ``path`` into one WriteError naming it and the cause."""
    try:
        yield
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from error


def _remove_stale_staging(directory: Path) -> None:
    """Remove staging directories of compiles whose process is gone (killed mid-compile)."""
    for entry in directory.glob(f"{_STAGING_PREFIX}*"):
        match = _STAGING_PID.match(entry.name)
        if entry.is_dir() and not (match and is_running(int(match.group(1)))):
            shutil.rmtree(entry, ignore_errors=True)



def _check_agreement(
    model: torch.nn.Module, compiled: CompiledModel, example_data: Dict[str, torch.Tensor], tolerance: float
) -> None:
    """Raise CompileError unless every output of ``compiled`` matches the eager model.

    A non-finite value anywhere is a mismatch; the runtime omits the stress of a cell without
    volume, the one output that has no value there.
    """
    data = dict(example_data)
    if keys.LOCAL_MASK in compiled.inputs and keys.LOCAL_MASK not in data:
        # the mask must reach the energy sum: check with every other atom not local
        data[keys.LOCAL_MASK] = torch.arange(data[keys.POS].shape[0]) % 2 == 0
    try:
        got = compiled(data)
    except _runtime.Error as error:
        raise CompileError(f"the compiled model fails on the example data: {error}") from error
    device = next(model.parameters()).device
    expected = model({name: value.to(device) for name, value in data.items()})
    _check_outputs(compiled.outputs, got, expected, data, tolerance, "the compiled model")
    if compiled.takes_batches:
        # a batch of the example and the example without its periodic images (no cell): each
        # frame's outputs as the eager model gives them one frame at a time
        frames = [example_data, _without_periodic_images(example_data)]
        try:
            got_frames = compiled.evaluate(frames, batch_size=len(frames))
        except _runtime.Error as error:
            raise CompileError(f"the compiled model fails on a batch of two frames: {error}") from error
        for index, (frame, got) in enumerate(zip(frames, got_frames)):
            expected = model({name: value.to(device) for name, value in frame.items()})
            _check_outputs(
                compiled.outputs, got, expected, frame, tolerance, f"the compiled model, on frame {index} of a batch,"
            )
    if compiled.exchanges_features:
        # the layer-by-layer parts of LAMMPS on several ranks, periodic images as ghosts
        data = {name: value for name, value in example_data.items() if name != keys.LOCAL_MASK}
        try:
            got = compiled.call_exchanging(data)
        except _runtime.Error as error:
            raise CompileError(f"the compiled model fails layer by layer on the example data: {error}") from error
        expected = model({name: value.to(device) for name, value in data.items()})
        _check_outputs(compiled.outputs, got, expected, data, tolerance, "the compiled model, layer by layer,")


def _without_periodic_images(frame: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``frame`` as a non-periodic one: its atoms, the edges within the cell, no cell."""
    inputs = {name: frame[name] for name in (keys.POS, keys.ATOM_TYPES, keys.EDGE_INDEX)}
    if keys.EDGE_CELL_SHIFT in frame:
        inside = (frame[keys.EDGE_CELL_SHIFT] == 0).all(dim=1)
        inputs[keys.EDGE_INDEX] = frame[keys.EDGE_INDEX][:, inside]
    return inputs


def _check_outputs(names, got, expected, data, tolerance: float, what: str) -> None:
    for name in names:
        if name not in got:
            if name == keys.STRESS and not has_volume(data):
                continue
            raise CompileError(f"{what} did not return '{name}'")
        error = relative_error(got[name], expected[name])
        if not error <= tolerance:
            raise CompileError(
                f"{what} disagrees with the eager model on '{name}': "
                f"relative error {error:.3g} (tolerance {tolerance:g}), "
                f"shape {tuple(got[name].shape)} (eager {tuple(expected[name].shape)})"
            )


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max(1, max |reference|), the measure TOLERANCE bounds.

    Relative to the largest entry rather than entry by entry, so that near-zero force
    components are not held to an impossible standard. inf for a shape mismatch or a
    non-finite value on either side: NaN never agrees with anything, NaN included.
    """
    if value.shape != reference.shape:
        return math.inf
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    if not (bool(torch.isfinite(value).all()) and bool(torch.isfinite(reference).all())):
        return math.inf
    if value.numel() == 0:
        return 0.0
    scale = max(1.0, float(reference.abs().max()))
    return float((value - reference).abs().max()) / scale
