"""Packages (``*.nequip.zip``, FILE_CONTRACT §5): a trained model that survives code changes.

A package is a torch.package archive holding the model's weights together with a snapshot of
the code that defines it (this project's model code and e3nn), plain-YAML metadata and one
example frame for compiling. Build one with ``nequip-package build`` or :func:`build_package`;
load one with :func:`ModelFromPackage` (or :func:`load_model`, which also reads checkpoints).
The readers are :mod:`nequip.load`'s, the one reader of trained-model files,
re-exported here.

Loading a package executes pickled code: only load files you trust. (Checkpoints are read as
plain data and run nothing.) :func:`read_package_metadata`, :func:`list_package_entries` and
:func:`load_example_data` never execute anything.
"""

from ..load import (
    PACKAGE_FORMAT_VERSION,
    PACKAGE_SUFFIX,
    CheckpointError,
    ModelFileError,
    ModelFromCheckpoint,
    ModelFromPackage,
    PackageError,
    list_package_entries,
    load_model,
    read_package_metadata,
)
from .build import build_package
from .dependencies import (
    DEFAULT_EXTERN_MODULES,
    DEFAULT_MOCK_MODULES,
    INTERN_MODULES,
    register_libraries_as_external_for_packaging,
)
from .example_data import load_example_data

__all__ = [
    "DEFAULT_EXTERN_MODULES",
    "DEFAULT_MOCK_MODULES",
    "INTERN_MODULES",
    "CheckpointError",
    "ModelFileError",
    "ModelFromCheckpoint",
    "ModelFromPackage",
    "PACKAGE_FORMAT_VERSION",
    "PACKAGE_SUFFIX",
    "PackageError",
    "build_package",
    "list_package_entries",
    "load_example_data",
    "load_model",
    "read_package_metadata",
    "register_libraries_as_external_for_packaging",
]
