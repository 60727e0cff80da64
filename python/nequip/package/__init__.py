"""Packages (``*.nequip.zip``, FILE_CONTRACT §5): a trained model that survives code changes.

A package is a torch.package archive holding the model's weights together with a snapshot of
the code that defines it (this project's model code and e3nn), plain-YAML metadata and one
example frame for compiling. Build one with ``nequip-package build`` or :func:`build_package`;
load one with :func:`ModelFromPackage` (or :func:`load_model`, which also reads checkpoints).

Loading a package or a checkpoint executes pickled code: only load files you trust.
:func:`read_package_metadata`, :func:`list_package_entries` and :func:`load_example_data` never
execute anything.
"""

from .build import build_package
from .dependencies import (
    DEFAULT_EXTERN_MODULES,
    DEFAULT_MOCK_MODULES,
    INTERN_MODULES,
    register_libraries_as_external_for_packaging,
)
from .example_data import load_example_data, synthetic_frame
from .format import PACKAGE_FORMAT_VERSION, PackageError, list_package_entries, read_package_metadata
from .loaders import ModelFromCheckpoint, ModelFromPackage, load_model

__all__ = [
    "DEFAULT_EXTERN_MODULES",
    "DEFAULT_MOCK_MODULES",
    "INTERN_MODULES",
    "ModelFromCheckpoint",
    "ModelFromPackage",
    "PACKAGE_FORMAT_VERSION",
    "PackageError",
    "build_package",
    "list_package_entries",
    "load_example_data",
    "load_model",
    "read_package_metadata",
    "register_libraries_as_external_for_packaging",
    "synthetic_frame",
]
