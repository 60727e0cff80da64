"""Compiled models: ``*.nequip.pth`` (TorchScript) and ``*.nequip.pt2`` (AOTInductor).

``compile_model`` turns an eager model into either file (FILE_CONTRACT §3, §4) and checks it
on the C++ runtime against the eager model; ``load_compiled`` loads either file on that
runtime (``nequip._runtime``, the one reader of compiled files) and calls it with tensors.
"""

from .compiler import (
    TOLERANCE,
    CompileError,
    MetadataError,
    WriteError,
    check_arguments,
    check_model_metadata,
    check_weights_finite,
    compile_model,
    relative_error,
)
from .contract import AOTI_INPUTS, AOTINDUCTOR, DEVICES, EXTENSIONS, MODES, TARGET_OUTPUTS, TARGETS, TORCHSCRIPT
from .loader import CompiledModel, load_compiled

__all__ = [
    "AOTI_INPUTS",
    "AOTINDUCTOR",
    "DEVICES",
    "EXTENSIONS",
    "MODES",
    "TARGETS",
    "TARGET_OUTPUTS",
    "TOLERANCE",
    "TORCHSCRIPT",
    "CompileError",
    "CompiledModel",
    "MetadataError",
    "WriteError",
    "check_arguments",
    "check_model_metadata",
    "check_weights_finite",
    "compile_model",
    "load_compiled",
    "relative_error",
]
