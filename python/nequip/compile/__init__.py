"""Compiled models: ``*.nequip.pth`` (TorchScript) and ``*.nequip.pt2`` (AOTInductor).

``compile_model`` turns an eager model into either file (FILE_CONTRACT §3, §4) and checks it
against the eager model; ``load_compiled`` loads either file, checks its metadata and calls
it from Python with correctly prepared inputs.
"""

from .compiler import TOLERANCE, CompileError, check_arguments, compile_model, relative_error
from .contract import (
    AOTI_INPUTS,
    AOTINDUCTOR,
    EXTENSIONS,
    MODES,
    TARGET_OUTPUTS,
    TARGETS,
    TORCHSCRIPT,
    MetadataError,
    ModelMetadata,
    parse_metadata,
)
from .loader import CompiledModel, load_compiled

__all__ = [
    "AOTI_INPUTS",
    "AOTINDUCTOR",
    "EXTENSIONS",
    "MODES",
    "TARGETS",
    "TARGET_OUTPUTS",
    "TOLERANCE",
    "TORCHSCRIPT",
    "CompileError",
    "CompiledModel",
    "MetadataError",
    "ModelMetadata",
    "check_arguments",
    "compile_model",
    "load_compiled",
    "relative_error",
    "parse_metadata",
]
