"""Trained models from their files: the one reader of checkpoints and packages.

``nequip.train`` writes checkpoints (``*.ckpt``, FILE_CONTRACT §6) and ``nequip.package``
writes packages (``*.nequip.zip``, §5); both, and everything after them (``nequip-test``,
``nequip-compile``, the ASE calculator, fine-tuning), read them here. This module sits below
both stages and imports neither::

    model_file_kind(path)       # what a model file is, from its name: the one dispatch on names
    load_model(path)            # a checkpoint or a package, by model_file_kind
      ModelFromCheckpoint(path) # installed model code + the checkpoint's hyperparameters and weights
      ModelFromPackage(path)    # the model code stored in the package (torch.package)

Compiled files (``*.nequip.pth``, ``*.nequip.pt2``) are named here too, so that every command
tells them apart the same way, but read only by the C++ runtime (:mod:`nequip.inference`).

Every reader raises the same errors in the same words: ``FileNotFoundError`` (``<path>: no
such file``), and the ``ModelFileError`` subclasses (ValueErrors) ``CheckpointError`` and
``PackageError``: ``<path>: not a nequip checkpoint: <why>`` (or ``package``) for another kind
of file, ``<path>: damaged checkpoint: <what>`` (or ``package``) for a truncated or corrupted
one or one that lacks a key.

What reading can execute: a checkpoint is read with ``torch.load(weights_only=True)``, which
refuses anything but plain data (tensors, numbers, strings, containers) and runs no code; a
package's model is unpickled with its own stored code, so load only packages you trust.
:func:`read_package_metadata`, :func:`list_package_entries` and :func:`read_package_entry`
use :mod:`zipfile` and :func:`yaml.safe_load` only and never execute anything.

A package is a ``torch.package`` zip archive. torch.package puts every entry under one
top-level folder (its name is of no meaning); below it, a package built by this project holds::

    model/metadata.yaml        plain-text YAML: format version, versions, variants, types, ...
    model/<variant>.pkl        the pickled model of each variant (``default``)
    model/example_data.pt      one frame (FILE_CONTRACT §1), ``torch.save``d plain tensors
    model/config.yaml          the training configuration, when the package came from training
    model/package_metadata.txt, model/eager_model.pkl, model/example_data.pkl
                               what the other NequIP release reads (format 2 on; see below)
    nequip/..., e3nn/...       the interned source of the code the model needs
    .data/...                  torch.package's own records (weights, extern module list, ...)

Package format history (bump ``PACKAGE_FORMAT_VERSION`` on every change a loader must know
about, and add a reader of the old version to ``PACKAGE_LOADERS``):

1. First format: the layout above.
2. Also the entries the other NequIP release reads, so that its ``ModelFromPackage`` loads our
   model: ``model/package_metadata.txt`` (its YAML, ``package_version_id`` 2),
   ``model/eager_model.pkl`` (a ``ModuleDict`` whose ``sole_model`` is
   :class:`nequip.ecosystem.adapter.ExportedModel` around the default variant) and
   ``model/example_data.pkl``. Read as format 1.

Packages written by the other NequIP release (``model/package_metadata.txt`` without
``model/metadata.yaml``) are read by :mod:`nequip.ecosystem.packages`.

A checkpoint is Lightning's dictionary; what is read here: ``hyper_parameters.model_config``
(``NequIPModel(**model_config)`` rebuilds the model), ``hyper_parameters.config`` (the
training configuration) and ``state_dict``, whose ``model.*`` entries are the weights to deploy
(the exponential moving average when training kept one). :mod:`nequip.train.checkpoint`
writes them.
"""

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Final, List, Optional, Tuple, Union

import torch
import yaml
from torch.package import PackageImporter

import nequip

if TYPE_CHECKING:
    from .model import NequIPModel

# The installed model code (nequip.model, e3nn) is imported only when a checkpoint is read:
# a package carries its own code and loads where the installed one is broken or different.

PathLike = Union[str, os.PathLike]

PACKAGE_FORMAT_VERSION: Final[int] = 2
"""The format this version of nequip writes, and the newest it reads."""

PACKAGE_SUFFIX: Final[str] = ".nequip.zip"
# wherever a package path is accepted, so is a nequip.net model ID: nequip.net:owner/name:version
NEQUIP_NET_PREFIX: Final[str] = "nequip.net:"
CHECKPOINT_SUFFIX: Final[str] = ".ckpt"
TORCHSCRIPT_SUFFIX: Final[str] = ".nequip.pth"
AOTINDUCTOR_SUFFIX: Final[str] = ".nequip.pt2"

# model file kinds, by the end of the file name (model_file_kind)
CHECKPOINT: Final[str] = "checkpoint"
PACKAGE: Final[str] = "package"
TORCHSCRIPT: Final[str] = "torchscript"
AOTINDUCTOR: Final[str] = "aotinductor"
MODEL_FILE_SUFFIXES: Final[Dict[str, str]] = {
    CHECKPOINT: CHECKPOINT_SUFFIX,
    PACKAGE: PACKAGE_SUFFIX,
    TORCHSCRIPT: TORCHSCRIPT_SUFFIX,
    AOTINDUCTOR: AOTINDUCTOR_SUFFIX,
}
MODEL_FILE_KINDS: Final[Tuple[str, ...]] = tuple(MODEL_FILE_SUFFIXES)
TRAINED_KINDS: Final[Tuple[str, ...]] = (CHECKPOINT, PACKAGE)
COMPILED_KINDS: Final[Tuple[str, ...]] = (TORCHSCRIPT, AOTINDUCTOR)

RESOURCE_PACKAGE: Final[str] = "model"
METADATA_RESOURCE: Final[str] = "metadata.yaml"
EXAMPLE_DATA_RESOURCE: Final[str] = "example_data.pt"
CONFIG_RESOURCE: Final[str] = "config.yaml"
DEFAULT_VARIANT: Final[str] = "default"

METADATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{METADATA_RESOURCE}"
EXAMPLE_DATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{EXAMPLE_DATA_RESOURCE}"
CONFIG_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{CONFIG_RESOURCE}"

FORMAT_VERSION_KEY: Final[str] = "package_format_version"

# The metadata entries of packages written by the other NequIP release (nequip 0.10 to 0.19.x:
# plain YAML, its format counter under ECOSYSTEM_VERSION_KEY; 0.7 to 0.9: pickled); read by
# nequip.ecosystem.packages
ECOSYSTEM_METADATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/package_metadata.txt"
ECOSYSTEM_PICKLED_METADATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/package_metadata.pkl"
ECOSYSTEM_VERSION_KEY: Final[str] = "package_version_id"
# the key of a model config naming the package of the other NequIP release its model comes from
# (a fine-tuned one is rebuilt from that package's code: nequip.model.build_model)
OTHER_RELEASE_PACKAGE: Final[str] = "other_release_package"

# the prefix of the model's weights in a checkpoint's state_dict (the LightningModule's ``model``)
CHECKPOINT_MODEL_PREFIX: Final[str] = "model."

# torch.save writes zip archives, as torch.package does
_ZIP_MAGIC = b"PK\x03\x04"


class ModelFileError(ValueError):
    """A file that is not a trained model this version of nequip can read."""


class CheckpointError(ModelFileError):
    """A checkpoint that cannot be used: another kind of file, a damaged one, or not ours."""


class PackageError(ModelFileError):
    """A file that is not a nequip package this version of nequip can read."""


def load_model(path: PathLike) -> torch.nn.Module:
    """The model in ``path``, a checkpoint (``*.ckpt``) or a package (``*.nequip.zip``), in eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: a compiled file (name the checkpoint or package it was compiled from),
            another kind of file, a damaged one, or one with non-finite weights.
    """
    if model_file_kind(path, accepted=TRAINED_KINDS) == PACKAGE:
        return ModelFromPackage(path)
    return ModelFromCheckpoint(path)


def model_file_kind(path: PathLike, accepted: Tuple[str, ...] = MODEL_FILE_KINDS) -> str:
    """What the model file ``path`` is, from the end of its name: ``"checkpoint"`` (``*.ckpt``),
    ``"package"`` (``*.nequip.zip``), ``"torchscript"`` (``*.nequip.pth``) or ``"aotinductor"``
    (``*.nequip.pt2``).

    Raises ModelFileError for a name of none of the ``accepted`` kinds, saying what was expected
    (and, for a compiled file where a trained model is needed, to give the file it was compiled
    from).
    """
    path = _model_file_path(path, "model")
    kind = next(
        (kind for kind, suffix in MODEL_FILE_SUFFIXES.items() if path.name.endswith(suffix) and path.name != suffix),
        None,
    )
    if kind in accepted:
        return kind
    if kind in COMPILED_KINDS:
        raise ModelFileError(
            f"{path}: a compiled model ({MODEL_FILE_SUFFIXES[kind]}), which only the C++ runtime runs: give the "
            f"package ('{PACKAGE_SUFFIX}') or checkpoint ('{CHECKPOINT_SUFFIX}') it was compiled from"
        )
    expected = _describe_kinds(accepted)
    if path.is_dir():
        raise ModelFileError(f"{path}: a directory, not a model file; give the file itself ({expected})")
    raise ModelFileError(f"{path}: cannot tell the kind of model file from its name: expected {expected}")


_KIND_NAMES = {CHECKPOINT: "a checkpoint", PACKAGE: "a package"}


def _describe_kinds(kinds: Tuple[str, ...]) -> str:
    """"a checkpoint ('.ckpt') or a package ('.nequip.zip')", and the compiled suffixes together."""
    parts = [f"{_KIND_NAMES[kind]} ('{MODEL_FILE_SUFFIXES[kind]}')" for kind in kinds if kind not in COMPILED_KINDS]
    compiled = [f"'{MODEL_FILE_SUFFIXES[kind]}'" for kind in kinds if kind in COMPILED_KINDS]
    if compiled:
        parts.append(f"a compiled model ({', '.join(compiled)})")
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]


def check_weights_finite(model: torch.nn.Module, source: Optional[PathLike] = None) -> None:
    """Refuse a model with NaN or infinite weights (parameters or buffers), which would predict
    only NaN: a ModelFileError naming ``source`` (the file it came from, if any) and the first
    non-finite tensors."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    bad = [name for name, tensor in tensors if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ModelFileError(
            ("" if source is None else f"{source}: ") + f"the model's weights are not finite (NaN or infinite): "
            f"{shown}; its every prediction "
            "would be NaN. Use a checkpoint saved before training diverged (e.g. best.ckpt), or retrain from "
            "finite data"
        )


# --- checkpoints ------------------------------------------------------------------------


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """The training checkpoint at ``path``, read as plain data and checked to be nequip's.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: another kind of file, one holding objects that are not plain data,
            a truncated or corrupted one, or one without the keys of a nequip checkpoint.
    """
    path = _model_file_path(path, "checkpoint")
    _check_is_file(path)
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            raise CheckpointError(f"{path}: not a nequip checkpoint: not a torch checkpoint (zip archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses every global that is not a tensor type or a plain container
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: not a nequip checkpoint: it holds objects that are not plain data{what}, so it was not "
            "written by nequip-train or it was tampered with; nothing in it was run"
        ) from None
    except Exception:  # torch raises several types for damaged archives
        if _is_intact_zip(path):
            message = f"{path}: not a nequip checkpoint: a zip archive, but not a torch checkpoint"
            raise CheckpointError(message) from None
        raise CheckpointError(f"{path}: damaged checkpoint: the file is truncated or corrupted") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a nequip checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    hyper_parameters = checkpoint.get("hyper_parameters")
    missing = [key for key in ("state_dict", "hyper_parameters") if key not in checkpoint]
    if isinstance(hyper_parameters, dict) and "model_config" not in hyper_parameters:
        missing.append("hyper_parameters.model_config")
    if missing:
        raise CheckpointError(f"{path}: not a nequip checkpoint: it lacks the key(s) {', '.join(missing)}")
    return checkpoint


def model_state_dict(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The model's weights in a checkpoint (the EMA weights when training kept them)."""
    prefix = CHECKPOINT_MODEL_PREFIX
    return {name[len(prefix) :]: value for name, value in checkpoint["state_dict"].items() if name.startswith(prefix)}


def ModelFromCheckpoint(path: PathLike) -> "NequIPModel":
    """The model trained in the checkpoint at ``path``, eager, in eval mode, on the CPU.

    Rebuilt with the installed nequip from the checkpoint's resolved hyperparameters and given
    the checkpoint's weights: the exponential moving average of the weights when training kept
    one, otherwise the trained weights.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`load_checkpoint`; also a checkpoint
            whose model_config or weights do not make a model.
    """
    from .model import build_model

    path = Path(path)
    checkpoint = load_checkpoint(path)
    model_config = checkpoint["hyper_parameters"]["model_config"]
    try:
        model = build_model(model_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint: its model_config does not make a model ({err})") from None
    except FileNotFoundError:
        # a model of the other NequIP release fine-tuned here: its code is in the package it came from
        source = model_config.get(OTHER_RELEASE_PACKAGE) if isinstance(model_config, dict) else None
        if source is None:
            raise
        raise CheckpointError(
            f"{path}: its model was fine-tuned from {source}, a package of another NequIP release whose code the "
            "model needs, and that file is no longer there: put the package back at that path"
        ) from None
    try:
        model.load_state_dict(model_state_dict(checkpoint))
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: damaged checkpoint: its weights do not fit the model its model_config describes ({err})"
        ) from None
    check_weights_finite(model, path)
    return model.eval()


# --- packages ---------------------------------------------------------------------------


def ModelFromPackage(path: PathLike, variant: str = DEFAULT_VARIANT) -> torch.nn.Module:
    """The model ``variant`` stored in the package at ``path``, in eval mode.

    The model's classes come from the code stored in the package, not the installed one, so a
    package keeps working when nequip or e3nn change. Its inputs and outputs follow
    FILE_CONTRACT §1 (float64).

    Raises:
        FileNotFoundError: no file at ``path``.
        PackageError: not a package, a damaged one, one in a format newer than this version
            of nequip reads, or no such variant in it.
    """
    path = check_package_name(path)
    metadata = read_package_metadata(path)
    if is_ecosystem_package(metadata):
        from .ecosystem.packages import load_model as load_ecosystem_model

        model = load_ecosystem_model(path, metadata, variant)
    else:
        variants = metadata["model_variants"]
        if variant not in variants:
            raise PackageError(f"{path}: no model variant {variant!r} in the package; it has: {', '.join(variants)}")
        model = PACKAGE_LOADERS[metadata[FORMAT_VERSION_KEY]](path, variant)
    check_weights_finite(model, path)
    return model.eval()


def _load_format_1(path: Path, variant: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        # torch.package warns about the deprecated TypedStorage it uses internally
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        importer = PackageImporter(str(path))
        return importer.load_pickle(RESOURCE_PACKAGE, model_resource(variant), map_location="cpu")


PACKAGE_LOADERS: Dict[int, Callable[[Path, str], torch.nn.Module]] = {1: _load_format_1, 2: _load_format_1}
"""How to load the model of each package format version this nequip knows, oldest first."""


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


def model_resource(variant: str) -> str:
    """Name of the pickled model of ``variant`` inside the ``model`` resource package."""
    return f"{variant}.pkl"


def check_package_name(path: PathLike) -> Path:
    """``path`` as a Path, after checking its name ends with ``.nequip.zip``."""
    path = _model_file_path(path, "package")
    if not path.name.endswith(PACKAGE_SUFFIX) or path.name == PACKAGE_SUFFIX:
        raise PackageError(f"{path}: a nequip package file name must end with '{PACKAGE_SUFFIX}'")
    return path


def read_package_metadata(path: PathLike, allow_newer: bool = False) -> Dict[str, Any]:
    """The metadata of the package at ``path``, checked against the formats this version knows.

    ``allow_newer`` returns the metadata of a package written in a newer format instead of
    refusing it (for inspection only: its layout may differ from what this version expects).
    """
    path = check_package_name(path)
    with _open_archive(path) as archive:
        entries = {name.partition("/")[2] for name in archive.namelist()}
        if METADATA_ENTRY not in entries and entries & {ECOSYSTEM_METADATA_ENTRY, ECOSYSTEM_PICKLED_METADATA_ENTRY}:
            # a package written by the other NequIP release (nequip.ecosystem reads it)
            from .ecosystem import packages

            if ECOSYSTEM_METADATA_ENTRY not in entries:
                packages.refuse_pickled_metadata(path)
            return packages.parse_metadata(path, _read_entry(archive, path, ECOSYSTEM_METADATA_ENTRY, what="no entry"))
        text = _read_entry(archive, path, METADATA_ENTRY, what="no metadata entry")
    return _parse_metadata(path, text, allow_newer=allow_newer)


def is_ecosystem_package(metadata: Dict[str, Any]) -> bool:
    """Whether ``metadata`` (:func:`read_package_metadata`) is that of the other release's package."""
    return ECOSYSTEM_VERSION_KEY in metadata and FORMAT_VERSION_KEY not in metadata


def read_package_entry(path: PathLike, entry: str) -> bytes:
    """The bytes of ``entry`` (a path below the archive's top-level folder, e.g. ``model/config.yaml``)."""
    path = check_package_name(path)
    with _open_archive(path) as archive:
        return _read_entry(archive, path, entry, what="no entry")


def list_package_entries(path: PathLike) -> List[Tuple[str, int]]:
    """``(name, size in bytes)`` of every entry of the archive, in archive order."""
    path = check_package_name(path)
    with _open_archive(path) as archive:
        return [(info.filename, info.file_size) for info in archive.infolist()]


def _check_is_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")


def resolve_model_path(path: PathLike) -> Path:
    """``path`` as a Path; a nequip.net model ID (``nequip.net:owner/name:version``) as the local
    package file it names, from the cache or downloaded (:mod:`nequip.ecosystem.nequip_net`)."""
    text = os.fspath(path)
    if text.startswith(NEQUIP_NET_PREFIX):
        from .ecosystem import nequip_net

        return nequip_net.resolve(text)
    return Path(path)


def _model_file_path(path: PathLike, kind: str) -> Path:
    # Path("") is the current directory: an empty name must not read as one
    if os.fspath(path) == "":
        raise FileNotFoundError(f"no {kind} to load: the path is empty")
    return resolve_model_path(path)


def _is_intact_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _open_archive(path: Path) -> zipfile.ZipFile:
    _check_is_file(path)
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            starts_like_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if starts_like_zip:
            raise PackageError(f"{path}: damaged package: the zip archive is truncated or corrupted") from None
        raise PackageError(f"{path}: not a nequip package: not a zip archive") from None


def _read_entry(archive: zipfile.ZipFile, path: Path, entry: str, what: str) -> bytes:
    """Read ``entry`` below the archive's single top-level folder (whatever its name)."""
    matches = [name for name in archive.namelist() if name.partition("/")[2] == entry]
    if not matches:
        raise PackageError(f"{path}: not a nequip package: {what} '{entry}' in the zip archive")
    if len(matches) > 1:
        raise PackageError(f"{path}: damaged package: '{entry}' appears {len(matches)} times ({', '.join(matches)})")
    try:
        return archive.read(matches[0])
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise PackageError(f"{path}: damaged package: cannot read '{entry}' ({e})") from None


def yaml_mapping(path: Path, text: bytes, entry: str) -> Dict[str, Any]:
    """The YAML mapping in the package entry ``entry`` (``text``, its bytes); PackageError if it is not one."""
    try:
        mapping = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise PackageError(f"{path}: damaged package: '{entry}' is not valid YAML ({e})") from None
    if not isinstance(mapping, dict):
        raise PackageError(f"{path}: damaged package: '{entry}' is not a YAML mapping")
    return mapping


def _parse_metadata(path: Path, text: bytes, allow_newer: bool) -> Dict[str, Any]:
    metadata = yaml_mapping(path, text, METADATA_ENTRY)
    version = metadata.get(FORMAT_VERSION_KEY)
    # bool is an int subclass: `true` is not a version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PackageError(
            f"{path}: damaged package: '{METADATA_ENTRY}' has no valid '{FORMAT_VERSION_KEY}' "
            f"(a positive integer), got {version!r}"
        )
    if version > PACKAGE_FORMAT_VERSION and not allow_newer:
        raise PackageError(
            f"{path}: package format version {version} is newer than this nequip ({nequip.__version__}) "
            f"can read (format version {PACKAGE_FORMAT_VERSION} at most); upgrade nequip to load it"
        )
    if version <= PACKAGE_FORMAT_VERSION:
        _check_required_keys(path, metadata, _REQUIRED_KEYS[version])
    return metadata


# keys a loader relies on, by format version
_REQUIRED_KEYS: Dict[int, Tuple[str, ...]] = {
    1: ("versions", "model_variants", "type_names", "r_max", "model_metadata", "model_config"),
    2: ("versions", "model_variants", "type_names", "r_max", "model_metadata", "model_config"),
}


def _check_required_keys(path: Path, metadata: Dict[str, Any], required: Tuple[str, ...]) -> None:
    missing = [key for key in required if key not in metadata]
    if missing:
        raise PackageError(f"{path}: damaged package: '{METADATA_ENTRY}' lacks the key(s) {', '.join(missing)}")
    variants = metadata["model_variants"]
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) for v in variants):
        raise PackageError(
            f"{path}: damaged package: 'model_variants' in '{METADATA_ENTRY}' must be a non-empty list of names, "
            f"got {variants!r}"
        )
