"""Load a trained model from a package or a checkpoint, as an eager ``NequIPModel`` in eval mode.

- :func:`ModelFromPackage` runs the model code stored *in the package* (torch.package), not the
  installed one, so a package keeps working when nequip or e3nn change.
- :func:`ModelFromCheckpoint` rebuilds the model with the *installed* code from the
  hyperparameters in a Lightning checkpoint and loads its weights (the EMA weights when
  training kept them).
- :func:`load_model` picks one of the two by the file name.

Both execute pickled code: load only files you trust.
"""

import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
from torch.package import PackageImporter

from .checkpoint import read_checkpoint
from .format import (
    CHECKPOINT_SUFFIX,
    DEFAULT_VARIANT,
    PACKAGE_SUFFIX,
    RESOURCE_PACKAGE,
    PackageError,
    PathLike,
    check_package_name,
    model_resource,
    read_package_metadata,
)


def ModelFromPackage(path: PathLike, variant: str = DEFAULT_VARIANT) -> torch.nn.Module:
    """The model ``variant`` stored in the package at ``path``, in eval mode.

    The model's classes come from the code stored in the package. Its inputs and outputs
    follow FILE_CONTRACT §1 (float64).

    Raises:
        FileNotFoundError: no file at ``path``.
        PackageError: not a package, a damaged one, one in a format newer than this version
            of nequip reads, or no such variant in it.
    """
    path = check_package_name(path)
    metadata = read_package_metadata(path)
    variants = metadata["model_variants"]
    if variant not in variants:
        raise PackageError(f"{path}: no model variant {variant!r} in the package; it has: {', '.join(variants)}")
    load = _PACKAGE_LOADERS[metadata["package_format_version"]]
    model = load(path, variant)
    return model.eval()


def _load_format_1(path: Path, variant: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        # torch.package warns about the deprecated TypedStorage it uses internally
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        importer = PackageImporter(str(path))
        return importer.load_pickle(RESOURCE_PACKAGE, model_resource(variant), map_location="cpu")


# how to load each format version this nequip knows, oldest first
_PACKAGE_LOADERS: Dict[int, Callable[[Path, str], torch.nn.Module]] = {1: _load_format_1}


def ModelFromCheckpoint(path: PathLike) -> torch.nn.Module:
    """The model trained in the Lightning checkpoint at ``path``, in eval mode.

    The model is rebuilt with the installed nequip from the resolved hyperparameters in the
    checkpoint and given the checkpoint's weights: the exponential moving average of the
    weights when training kept one, otherwise the trained weights. See
    :mod:`nequip.package.checkpoint` for the checkpoint layout this reads.

    Raises:
        nequip.train.checkpoint.CheckpointError (a ValueError): a missing, damaged or foreign
            checkpoint, or one whose weights do not fit its model.
    """
    return read_checkpoint(path).build_model().eval()


def load_model(path: PathLike) -> torch.nn.Module:
    """The model in ``path``, a checkpoint (``*.ckpt``) or a package (``*.nequip.zip``)."""
    path = Path(path)
    if path.name.endswith(PACKAGE_SUFFIX):
        return ModelFromPackage(path)
    if path.name.endswith(CHECKPOINT_SUFFIX):
        return ModelFromCheckpoint(path)
    raise ValueError(
        f"{path}: cannot tell the kind of model file from its name: "
        f"expected a checkpoint ('{CHECKPOINT_SUFFIX}') or a package ('{PACKAGE_SUFFIX}')"
    )


def package_importers(model: torch.nn.Module) -> Tuple[PackageImporter, ...]:
    """The package importers that the classes of ``model`` (and its submodules) came from.

    A model loaded from a package is made of classes defined by that package's code; writing
    it into a new package needs the old package's importer to find that code.
    """
    from torch.package.package_importer import _package_imported_modules

    importers = []
    for module in model.modules():
        defining_module = _package_imported_modules.get(type(module).__module__)
        if defining_module is not None and defining_module.__loader__ not in importers:
            importers.append(defining_module.__loader__)
    return tuple(importers)
