"""The package file format (FILE_CONTRACT §5), read without unpickling anything.

A package is a ``torch.package`` zip archive. torch.package puts every entry under one
top-level folder (its name is of no meaning); below it, a package built by this project holds::

    model/metadata.yaml        plain-text YAML: format version, versions, variants, types, ...
    model/<variant>.pkl        the pickled model of each variant (``default``)
    model/example_data.pt      one frame (FILE_CONTRACT §1), ``torch.save``d plain tensors
    model/config.yaml          the training configuration, when the package came from training
    nequip/..., e3nn/...       the interned source of the code the model needs
    .data/...                  torch.package's own records (weights, extern module list, ...)

Everything in this module uses :mod:`zipfile` and :func:`yaml.safe_load` only, so it is safe
on files from anywhere: ``nequip-package info`` and ``list`` never execute package content.
Loading a model (:mod:`nequip.package.loaders`) does execute pickled code.

Format history (bump ``PACKAGE_FORMAT_VERSION`` on every change a loader must know about,
and teach the loaders to read the old versions):

1. First format: the layout above.
"""

import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Final, List, Tuple, Union

import yaml

import nequip

PathLike = Union[str, os.PathLike]

PACKAGE_FORMAT_VERSION: Final[int] = 1
"""The format this version of nequip writes, and the newest it reads."""

PACKAGE_SUFFIX: Final[str] = ".nequip.zip"
CHECKPOINT_SUFFIX: Final[str] = ".ckpt"

RESOURCE_PACKAGE: Final[str] = "model"
METADATA_RESOURCE: Final[str] = "metadata.yaml"
EXAMPLE_DATA_RESOURCE: Final[str] = "example_data.pt"
CONFIG_RESOURCE: Final[str] = "config.yaml"
DEFAULT_VARIANT: Final[str] = "default"

METADATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{METADATA_RESOURCE}"
EXAMPLE_DATA_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{EXAMPLE_DATA_RESOURCE}"
CONFIG_ENTRY: Final[str] = f"{RESOURCE_PACKAGE}/{CONFIG_RESOURCE}"

FORMAT_VERSION_KEY: Final[str] = "package_format_version"

_ZIP_MAGIC = b"PK\x03\x04"


class PackageError(ValueError):
    """A file that is not a nequip package this version of nequip can read."""


def model_resource(variant: str) -> str:
    """Name of the pickled model of ``variant`` inside the ``model`` resource package."""
    return f"{variant}.pkl"


def check_package_name(path: PathLike) -> Path:
    """``path`` as a Path, after checking its name ends with ``.nequip.zip``."""
    path = Path(path)
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
        text = _read_entry(archive, path, METADATA_ENTRY, what="no metadata entry")
    return _parse_metadata(path, text, allow_newer=allow_newer)


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


def _open_archive(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
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


def _parse_metadata(path: Path, text: bytes, allow_newer: bool) -> Dict[str, Any]:
    try:
        metadata = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise PackageError(f"{path}: damaged package: '{METADATA_ENTRY}' is not valid YAML ({e})") from None
    if not isinstance(metadata, dict):
        raise PackageError(f"{path}: damaged package: '{METADATA_ENTRY}' is not a YAML mapping")
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
