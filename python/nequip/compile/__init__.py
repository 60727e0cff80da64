"""Compiled models: ``*.nequip.pth`` (TorchScript) and ``*.nequip.pt2`` (AOTInductor).

``compile_model`` turns an eager model into either file (FILE_CONTRACT §3, §4) and checks it
on the C++ runtime against the eager model. Compiled files are opened for evaluation by
:func:`nequip.inference.open_model` (on ``nequip._runtime``, the one reader of compiled files).
"""

from .compiler import (
    TOLERANCE,
    CompileError,
    MetadataError,
    WriteError,
    check_arguments,
    check_model_metadata,
    compile_model,
    relative_error,
)
from .contract import AOTI_INPUTS, AOTINDUCTOR, DEVICES, EXTENSIONS, MODES, TARGET_OUTPUTS, TARGETS, TORCHSCRIPT

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
    "MetadataError",
    "WriteError",
    "check_arguments",
    "check_model_metadata",
    "compile_model",
    "relative_error",
]
