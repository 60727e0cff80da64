"""Packages written by the other NequIP release (``nequip-package build`` of nequip 0.10 to 0.19.x).

:mod:`nequip.load` reads every package; when a package has the other release's metadata entry
and not ours, it hands it here. The layout of such a package (a ``torch.package`` zip whose
top-level folder is the file's stem)::

    model/package_metadata.txt   plain-text YAML: package_version_id (1, 2), atom_types ({0: Cu, ...}),
                                 available_models ([eager, compile]), versions (e3nn, nequip, torch),
                                 external_modules ({numpy: 2.4.6, triton: null, ...}; from id 2)
    model/eager_model.pkl        the model: a ModuleDict whose entry ``sole_model`` is its GraphModel
    model/compile_model.pkl      the same weights for that release's torch.compile training
    model/example_data.pkl       one atomic data dictionary (pickled tensors)
    model/config.yaml            the Hydra training configuration
    nequip/..., e3nn/...         that release's code, interned
    .data/extern_modules         torch.package's list of modules taken from the loading environment

Package ``package_version_id`` 0 (nequip 0.7 to 0.9) kept its metadata pickled
(``model/package_metadata.pkl``); neither that release's later versions nor this one read it.

What this module gives :mod:`nequip.load`: :func:`parse_metadata` (the metadata as stored, plus
``type_names`` and ``model_variants`` in our words; nothing unpickled), :func:`load_model` (the
model from its own interned code, as an :class:`~nequip.ecosystem.model.EcosystemModel`) and
:func:`load_example_frame`; and to ``nequip-package build``, :func:`repackage`.
"""

import contextlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml
from torch.package import PackageExporter, PackageImporter, sys_importer

from nequip.load import (
    DEFAULT_VARIANT,
    ECOSYSTEM_METADATA_ENTRY,
    ECOSYSTEM_PICKLED_METADATA_ENTRY,
    ECOSYSTEM_VERSION_KEY,
    OTHER_RELEASE_PACKAGE,
    RESOURCE_PACKAGE,
    PackageError,
    yaml_mapping,
)

METADATA_RESOURCE = "package_metadata.txt"
METADATA_ENTRY = ECOSYSTEM_METADATA_ENTRY
PICKLED_METADATA_ENTRY = ECOSYSTEM_PICKLED_METADATA_ENTRY  # package_version_id 0
VERSION_KEY = ECOSYSTEM_VERSION_KEY
READABLE_VERSIONS: Tuple[int, ...] = (1, 2)
EAGER_MODEL_RESOURCE = "eager_model.pkl"
EXAMPLE_DATA_RESOURCE = "example_data.pkl"
CONFIG_RESOURCE = "config.yaml"
EXTERN_MODULES_ENTRY = ".data/extern_modules"
# the key of the other release's model in the ModuleDict it stores
SOLE_MODEL_KEY = "sole_model"


def parse_metadata(path: Path, text: bytes) -> Dict[str, Any]:
    """The metadata of the other release's package at ``path`` (``text``: its
    ``model/package_metadata.txt``), as stored, with two keys added in our words:
    ``type_names`` (from ``atom_types``) and ``model_variants`` (``[default]``: its eager model).

    Raises PackageError for a metadata entry that is not YAML, lacks a key, or has a
    ``package_version_id`` this nequip does not read.
    """
    metadata = yaml_mapping(path, text, METADATA_ENTRY)
    version = metadata.get(VERSION_KEY)
    if not isinstance(version, int) or isinstance(version, bool):
        raise PackageError(
            f"{path}: damaged package: '{METADATA_ENTRY}' has no valid '{VERSION_KEY}' (an integer), got {version!r}"
        )
    if version not in READABLE_VERSIONS:
        raise PackageError(
            f"{path}: a package of another NequIP release with {VERSION_KEY} {version}, which this nequip does not "
            f"read (it reads {VERSION_KEY} {' and '.join(map(str, READABLE_VERSIONS))}, written by nequip 0.10 to "
            "0.19); open it with the release that wrote it and compile it there, or re-package it with nequip 0.19"
        )
    missing = [key for key in ("atom_types", "available_models", "versions") if key not in metadata]
    if missing:
        raise PackageError(f"{path}: damaged package: '{METADATA_ENTRY}' lacks the key(s) {', '.join(missing)}")
    atom_types = metadata["atom_types"]
    if not (
        isinstance(atom_types, dict)
        and sorted(atom_types) == list(range(len(atom_types)))
        and all(isinstance(name, str) for name in atom_types.values())
        and atom_types
    ):
        raise PackageError(
            f"{path}: damaged package: 'atom_types' in '{METADATA_ENTRY}' must map 0, 1, ... to type names, "
            f"got {atom_types!r}"
        )
    if "eager" not in (metadata["available_models"] or []):
        raise PackageError(
            f"{path}: damaged package: 'available_models' in '{METADATA_ENTRY}' lacks the eager model, "
            f"got {metadata['available_models']!r}"
        )
    metadata["type_names"] = [atom_types[index] for index in range(len(atom_types))]
    metadata["model_variants"] = [DEFAULT_VARIANT]
    return metadata


def refuse_pickled_metadata(path: Path) -> None:
    """The refusal of a package whose metadata is pickled (``package_version_id`` 0)."""
    raise PackageError(
        f"{path}: a package of an early NequIP release (0.7 to 0.9: {VERSION_KEY} 0, metadata pickled in "
        f"'{PICKLED_METADATA_ENTRY}'), which neither this nequip nor NequIP 0.10 and later read; compile it "
        "with the release that wrote it"
    )


def made_by(metadata: Dict[str, Any]) -> str:
    """``"nequip <version>"``: the release that wrote the package."""
    return f"nequip {(metadata.get('versions') or {}).get('nequip', '(version not recorded)')}"


def load_model(path: Path, metadata: Dict[str, Any], variant: str) -> torch.nn.Module:
    """The model of the other release's package at ``path``, from the package's own code, behind
    this project's eager-model interface (:class:`~nequip.ecosystem.model.EcosystemModel`).

    Raises PackageError naming the modules (and the versions the package recorded) when the
    package needs modules this environment lacks; older ones than recorded are named in a
    warning, and in the error if loading then fails.
    """
    from .model import EcosystemModel, EcosystemModelError, graph_model_of

    if variant != DEFAULT_VARIANT:
        raise PackageError(f"{path}: no model variant {variant!r} in the package; it has: {DEFAULT_VARIANT}")
    older = _check_extern_modules(path, metadata)
    try:
        stored = _load_pickle(_importer(path), EAGER_MODEL_RESOURCE)
    except PackageError:
        raise
    except Exception as error:  # whatever the package's own code raises
        hint = f"; {_describe_older(older)}: install at least the versions it recorded" if older else ""
        raise PackageError(
            f"{path}: cannot load the model of this package of {made_by(metadata)} "
            f"({type(error).__name__}: {error}){hint}"
        ) from error
    try:
        model = EcosystemModel(graph_model_of(stored), made_by(metadata))
    except EcosystemModelError as error:
        raise PackageError(f"{path}: a package of {made_by(metadata)} this nequip cannot run: {error}") from None
    # what rebuilds it (fine-tuning checkpoints): its package (nequip.model.build_model)
    model.config[OTHER_RELEASE_PACKAGE] = str(Path(path).resolve())
    return model.eval()


def load_example_frame(path: Path) -> Dict[str, torch.Tensor]:
    """The example frame of the other release's package at ``path``: the input keys of its
    ``model/example_data.pkl`` (unpickled by torch.package: tensors only), one frame."""
    from nequip.package.example_data import example_inputs

    data = _load_pickle(_importer(path), EXAMPLE_DATA_RESOURCE)
    if not isinstance(data, dict) or "pos" not in data or not isinstance(data["pos"], torch.Tensor):
        raise PackageError(f"{path}: damaged package: '{RESOURCE_PACKAGE}/{EXAMPLE_DATA_RESOURCE}' is not a frame")
    num_atoms = data.get("num_atoms")
    if num_atoms is not None and num_atoms.numel() != 1:
        raise PackageError(f"{path}: '{RESOURCE_PACKAGE}/{EXAMPLE_DATA_RESOURCE}' holds {num_atoms.numel()} frames, not one")
    frame = example_inputs(data)
    if "cell" in frame:
        frame["cell"] = frame["cell"].reshape(1, 3, 3)
    return frame


def extern_modules(path: Path) -> List[str]:
    """The top-level modules the package takes from the loading environment (not interned),
    apart from torch and the standard library: what must be installed to load it."""
    listed = _read_entry(path, EXTERN_MODULES_ENTRY).decode("utf-8").split()
    top_levels = sorted({name.partition(".")[0] for name in listed})
    return [name for name in top_levels if name not in sys.stdlib_module_names and name not in ("builtins", "torch")]


def _check_extern_modules(path: Path, metadata: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """Refuse a package whose extern modules are not installed; return (module, recorded
    version, installed version) of those installed in a version older than recorded."""
    from nequip.package.dependencies import installed_version

    recorded = metadata.get("external_modules") or {}
    missing, older = [], []
    for name in extern_modules(path):
        version = recorded.get(name)
        if importlib.util.find_spec(name) is None:
            missing.append(f"{name} {version}" if version else f"{name} (version not recorded)")
        elif version and _older(installed_version(name), str(version)):
            older.append((name, str(version), installed_version(name)))
    if missing:
        raise PackageError(
            f"{path}: the package's code needs {', '.join(missing)} (the version{'s' if len(missing) > 1 else ''} "
            f"it was made with), not installed here: install {'them' if len(missing) > 1 else 'it'} to load this "
            "package"
        )
    if older:
        warnings.warn(f"{path}: {_describe_older(older)}", stacklevel=3)
    return older


def _describe_older(older: List[Tuple[str, str, str]]) -> str:
    return "the package was made with " + ", ".join(
        f"{name} {recorded} and this environment has {installed}" for name, recorded, installed in older
    )


def _older(installed: str, recorded: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(installed) < Version(recorded)
    except InvalidVersion:
        return False


def _importer(path: Path) -> PackageImporter:
    with _quiet_torch_package():
        return PackageImporter(str(path))


def _load_pickle(importer: PackageImporter, resource: str):
    with _quiet_torch_package():
        return importer.load_pickle(RESOURCE_PACKAGE, resource, map_location="cpu")


@contextlib.contextmanager
def _quiet_torch_package():
    # torch.package warns about the deprecated TypedStorage it uses internally
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        yield


def repackage(source: Path, output: Path, verify: bool = True) -> Dict[str, Any]:
    """Write the other release's package ``source`` again, in its own format, to ``output``:
    every model it stores, its example data, configuration and metadata (as stored), with its
    own code (torch.package's re-export: the code comes from the package's importer).

    With ``verify``, the new package's model must reproduce the source's exactly on the example
    frame. Written atomically: a failure leaves no file. Returns the new package's metadata.
    """
    from nequip.load import read_package_metadata

    metadata = read_package_metadata(source)
    importer = _importer(source)
    stored = {f"{mode}_model.pkl": _load_pickle(importer, f"{mode}_model.pkl") for mode in metadata["available_models"]}
    stored[EXAMPLE_DATA_RESOURCE] = _load_pickle(importer, EXAMPLE_DATA_RESOURCE)
    texts = {name: importer.load_text(RESOURCE_PACKAGE, name) for name in (METADATA_RESOURCE, CONFIG_RESOURCE)}
    reference = load_model(source, metadata, DEFAULT_VARIANT) if verify else None
    return _write(output, source, importer, stored, texts, reference)


def package_fine_tuned(model: torch.nn.Module, output: Path, example_frame: Dict[str, torch.Tensor],
                       config_text: Optional[str], verify: bool = True) -> Dict[str, Any]:  # fmt: skip
    """Write ``model`` (an :class:`~nequip.ecosystem.model.EcosystemModel` fine-tuned with our
    trainer) to ``output`` as a package of the other release's format, with the code of the
    package it came from: its eager model, the example frame, ``config_text`` (our training
    configuration) and that package's metadata (its eager model only)."""
    from nequip.load import package_importers

    source = Path(model.config[OTHER_RELEASE_PACKAGE])
    (importer,) = package_importers(model)
    metadata = yaml.safe_load(importer.load_text(RESOURCE_PACKAGE, METADATA_RESOURCE))
    metadata["available_models"] = ["eager"]
    frame = dict(example_frame)
    num_atoms = frame["pos"].shape[0]
    frame.update(batch=torch.zeros(num_atoms, dtype=torch.int64), num_atoms=torch.tensor([num_atoms]))
    stored = {
        EAGER_MODEL_RESOURCE: torch.nn.ModuleDict({SOLE_MODEL_KEY: model.graph_model}),
        EXAMPLE_DATA_RESOURCE: frame,
    }
    texts = {METADATA_RESOURCE: yaml.safe_dump(metadata)}
    if config_text is not None:
        texts[CONFIG_RESOURCE] = config_text
    return _write(output, source, importer, stored, texts, model.eval() if verify else None)


def _write(output: Path, source: Path, importer: PackageImporter, stored: Dict[str, Any], texts: Dict[str, str],
           reference: Optional[torch.nn.Module]) -> Dict[str, Any]:  # fmt: skip
    """A package of the other release's format at ``output`` (atomically): ``stored`` objects
    pickled and ``texts`` saved under ``model/``, the code taken from ``importer`` (that of the
    package ``source``; its extern modules stay extern). With a ``reference`` model, the written
    package's model must reproduce it exactly on the written example frame."""
    from nequip.load import read_package_metadata
    from nequip.package.build import check_reproduces
    from nequip.utils.atomic_io import atomic_path

    externs = _read_entry(source, EXTERN_MODULES_ENTRY).decode("utf-8").split()
    with atomic_path(output) as tmp:
        with _quiet_torch_package():
            # a file object: torch.package names the archive's top-level folder after the file
            with open(tmp, "wb") as file:
                exporter = PackageExporter(file, importer=(importer, sys_importer))
                exporter.extern(externs)
                exporter.mock(["matplotlib", "matplotlib.**"], allow_empty=True)
                exporter.intern("**")
                for resource, value in stored.items():
                    exporter.save_pickle(RESOURCE_PACKAGE, resource, value)
                for name, text in texts.items():
                    exporter.save_text(RESOURCE_PACKAGE, name, text)
                exporter.close()
        if reference is not None:
            written = load_model(tmp, parse_metadata(tmp, _read_entry(tmp, METADATA_ENTRY)), DEFAULT_VARIANT)
            check_reproduces(output, {DEFAULT_VARIANT: reference}, {DEFAULT_VARIANT: written}, load_example_frame(tmp))
    return read_package_metadata(output)


def _read_entry(path: Path, entry: str) -> bytes:
    """``entry`` below the archive's top-level folder, whatever the file's name (a package being
    written has a temporary one)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.partition("/")[2] == entry]
        if len(names) != 1:
            raise PackageError(f"{path}: damaged package: no single entry '{entry}' in the zip archive")
        return archive.read(names[0])
