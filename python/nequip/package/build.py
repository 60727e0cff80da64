"""Build a package (``*.nequip.zip``) from a checkpoint or from another package.

The package holds the model (weights and the interned code that defines it), its metadata
as plain YAML, and one example frame; see :mod:`nequip.load` for the layout and
:mod:`nequip.package.dependencies` for what is interned, extern and mocked.

A package built from a package keeps the code of the original: the classes of a model loaded
from a package come from that package's importer, and the exporter takes the source of every
module from the first importer in ``(package importer, installed modules)`` that has it
(torch.package's "re-export an imported object"). The same holds for a checkpoint of a run
fine-tuned from a package.

The archive is written to a temporary file beside the output, loaded back and checked to
reproduce the source model's predictions on the example frame, and only then renamed into
place: a failed build leaves no file behind.
"""

import platform
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import yaml
from torch.package import PackageExporter, sys_importer
from torch.package.importer import OrderedImporter
from torch.package.package_exporter import PackagingError

import nequip
from nequip.utils.atomic_io import atomic_path

from ..load import (
    CONFIG_ENTRY,
    CONFIG_RESOURCE,
    DEFAULT_VARIANT,
    EXAMPLE_DATA_RESOURCE,
    FORMAT_VERSION_KEY,
    METADATA_RESOURCE,
    OTHER_RELEASE_PACKAGE,
    PACKAGE_FORMAT_VERSION,
    PACKAGE_LOADERS,
    RESOURCE_PACKAGE,
    ModelFromPackage,
    PackageError,
    TRAINED_KINDS,
    PathLike,
    check_package_name,
    is_ecosystem_package,
    list_package_entries,
    model_file_kind,
    model_resource,
    package_importers,
    read_package_entry,
    read_package_metadata,
)
from ..ecosystem.packages import EAGER_MODEL_RESOURCE as ECOSYSTEM_MODEL_RESOURCE
from ..ecosystem.packages import EXAMPLE_DATA_RESOURCE as ECOSYSTEM_EXAMPLE_DATA_RESOURCE
from ..ecosystem.packages import METADATA_RESOURCE as ECOSYSTEM_METADATA_RESOURCE
from . import dependencies
from .checkpoint import read_checkpoint
from .example_data import load_example_data, serialize_frame

_OUTPUT_KEYS = ("atomic_energy", "total_energy", "forces", "stress", "virial")


def build_package(source: PathLike, output: PathLike, verify: bool = True) -> Dict[str, Any]:
    """Write the package ``output`` (``*.nequip.zip``) from a checkpoint or a package ``source``.

    From a checkpoint: the model with the checkpoint's EMA weights if training kept them
    (otherwise its trained weights), and as example data the first frame of the training data
    named by the checkpoint's configuration, or a synthetic frame
    (:func:`nequip.data.synthetic_frame`) when that file is not available.
    From a package: every model variant, the example data and the configuration of the
    original, with the original's code; a package of the other NequIP release is written again
    in its own format (:func:`nequip.ecosystem.packages.repackage`).

    ``verify`` loads the written package back and requires its predictions on the example
    frame to equal the source model's exactly before the package is put in place.

    Returns the package's metadata. Raises ``PackageError``/``CheckpointError`` for unusable
    input, ``FileNotFoundError`` for a missing one; ``output`` is then left untouched.
    """
    source, output = Path(source), Path(output)
    check_package_name(output)
    kind = model_file_kind(source, TRAINED_KINDS)
    if kind == "package" and is_ecosystem_package(read_package_metadata(source)):
        # kept in the other release's format: its models are made of its own code
        from nequip.ecosystem.packages import repackage

        return repackage(source, output, verify=verify)
    contents = _from_package(source) if kind == "package" else _from_checkpoint(source)
    models, example_frame, config_text, origin, example_origin = contents
    if OTHER_RELEASE_PACKAGE in getattr(models[DEFAULT_VARIANT], "config", {}):
        # a model of the other NequIP release fine-tuned here: made of that release's code, it
        # goes into a package of that release's format
        from nequip.ecosystem.packages import package_fine_tuned

        return package_fine_tuned(models[DEFAULT_VARIANT], output, example_frame, config_text, verify=verify)
    _check_same_model_family(source, models)

    with atomic_path(output) as tmp:
        try:
            metadata = _write_archive(tmp, models, example_frame, config_text, origin, example_origin)
        except PackagingError as e:
            raise PackageError(
                f"{output}: cannot package the code of the model in {source}; extern or mock the modules below with "
                f"nequip.package.register_libraries_as_external_for_packaging:{e}"
            ) from None
        if verify:
            _verify(tmp, output, models, example_frame)
    return metadata


def _from_package(source: Path):
    source_metadata = read_package_metadata(source)
    models = {variant: ModelFromPackage(source, variant) for variant in source_metadata["model_variants"]}
    example_frame = load_example_data(source)
    config_text = None
    if any(name.partition("/")[2] == CONFIG_ENTRY for name, _ in list_package_entries(source)):
        config_text = read_package_entry(source, CONFIG_ENTRY).decode("utf-8")
    origin = {
        "kind": "package",
        "file": source.name,
        FORMAT_VERSION_KEY: source_metadata[FORMAT_VERSION_KEY],
        "origin": source_metadata.get("origin"),
    }
    example_origin = source_metadata.get("example_data", {}).get("origin", f"example data of {source.name}")
    return models, example_frame, config_text, origin, example_origin


def _from_checkpoint(source: Path):
    checkpoint = read_checkpoint(source)
    model = checkpoint.model
    example_frame, example_origin = checkpoint.example_frame()
    config_text = None
    if checkpoint.training_config is not None:
        config_text = yaml.safe_dump(checkpoint.training_config, sort_keys=False)
    origin = {"kind": "checkpoint", "file": source.name, "weights": checkpoint.weights}
    if checkpoint.from_package is not None:
        origin["fine_tuned_from"] = str(checkpoint.from_package)
    return {DEFAULT_VARIANT: model}, example_frame, config_text, origin, example_origin


def _check_same_model_family(source: Path, models: Dict[str, torch.nn.Module]) -> None:
    type_names = {tuple(model.type_names) for model in models.values()}
    if len(type_names) != 1:
        raise PackageError(f"{source}: the model variants disagree on the type names: {sorted(type_names)}")


def _write_archive(
    path: Path,
    models: Dict[str, torch.nn.Module],
    example_frame: Dict[str, torch.Tensor],
    config_text: Optional[str],
    origin: Dict[str, Any],
    example_origin: str,
) -> Dict[str, Any]:
    importers = _importers(models.values())
    with warnings.catch_warnings():
        # torch.package warns about the deprecated TypedStorage it uses internally
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        # a file object, not a name: torch.package names the archive's top-level folder after
        # the file, which here is a temporary name
        with open(path, "wb") as f:
            exporter = PackageExporter(f, importer=importers)
            try:
                exporter.intern([f"{name}.**" for name in dependencies.INTERN_MODULES])
                exporter.extern([f"{name}.**" for name in dependencies.extern_modules()], allow_empty=True)
                exporter.mock([f"{name}.**" for name in dependencies.mock_modules()], allow_empty=True)
                for variant, model in models.items():
                    exporter.save_pickle(RESOURCE_PACKAGE, model_resource(variant), model)
                exporter.save_binary(RESOURCE_PACKAGE, EXAMPLE_DATA_RESOURCE, serialize_frame(example_frame))
                if config_text is not None:
                    exporter.save_text(RESOURCE_PACKAGE, CONFIG_RESOURCE, config_text)
                _save_ecosystem_entries(exporter, models[DEFAULT_VARIANT], example_frame)
                # last: the dependency graph is complete once every pickle is saved
                metadata = _metadata(exporter, importers, models, example_frame, origin, example_origin)
                exporter.save_text(RESOURCE_PACKAGE, METADATA_RESOURCE, yaml.safe_dump(metadata, sort_keys=False))
                exporter.save_text(RESOURCE_PACKAGE, ECOSYSTEM_METADATA_RESOURCE, _ecosystem_metadata(metadata))
                exporter.close()
            except BaseException:
                # An unfinished zip writer completes the archive when it is garbage-collected,
                # writing to ``f``; once ``f`` is closed that aborts the process. Finish it now
                # (the file is discarded anyway).
                writer = getattr(exporter, "zip_file", None)
                if writer is not None:
                    try:
                        writer.write_end_of_file()
                    except (OSError, RuntimeError):
                        pass  # after a failed write; the error to report is that one
                raise
    return metadata


def _save_ecosystem_entries(exporter: PackageExporter, model: torch.nn.Module, example_frame: Dict[str, torch.Tensor]):
    """The entries the other NequIP release reads (format 2 on): its eager model, a ``ModuleDict``
    whose ``sole_model`` is ours behind its interface (:class:`nequip.ecosystem.adapter.ExportedModel`),
    and its example data, a pickled one-frame batch."""
    from nequip.ecosystem.adapter import ExportedModel

    exporter.save_pickle(
        RESOURCE_PACKAGE, ECOSYSTEM_MODEL_RESOURCE, torch.nn.ModuleDict({"sole_model": ExportedModel(model)})
    )
    frame = dict(example_frame)
    num_atoms = frame["pos"].shape[0]
    frame.setdefault("cell", torch.zeros((1, 3, 3), dtype=torch.float64))
    frame.setdefault("edge_cell_shift", torch.zeros((frame["edge_index"].shape[1], 3), dtype=torch.float64))
    frame.setdefault("pbc", torch.zeros((1, 3), dtype=torch.bool))
    frame["batch"] = torch.zeros(num_atoms, dtype=torch.int64)
    frame["num_atoms"] = torch.tensor([num_atoms], dtype=torch.int64)
    exporter.save_pickle(RESOURCE_PACKAGE, ECOSYSTEM_EXAMPLE_DATA_RESOURCE, frame)


def _ecosystem_metadata(metadata: Dict[str, Any]) -> str:
    """``model/package_metadata.txt`` as the other NequIP release writes it (its format id 2)."""
    versions = metadata["versions"]
    return yaml.safe_dump(
        {
            "atom_types": dict(enumerate(metadata["type_names"])),
            "available_models": ["eager"],
            "external_modules": dict(metadata["extern_modules"]),
            "package_version_id": 2,
            "versions": {"e3nn": versions["e3nn"], "nequip": versions["nequip"], "torch": versions["torch"]},
        }
    )


def _importers(models) -> Tuple:
    """The importers to take the models' code from: their packages' first, then the installed modules."""
    importers = []
    for model in models:
        importers.extend(imp for imp in package_importers(model) if imp not in importers)
    return (*importers, sys_importer)


def _metadata(
    exporter: PackageExporter,
    importers: Tuple,
    models: Dict[str, torch.nn.Module],
    example_frame: Dict[str, torch.Tensor],
    origin: Dict[str, Any],
    example_origin: str,
) -> Dict[str, Any]:
    model = next(iter(models.values()))
    code = OrderedImporter(*importers)
    return {
        FORMAT_VERSION_KEY: PACKAGE_FORMAT_VERSION,
        # versions of the code in the package (interned: possibly older than the installed
        # nequip when re-packaging) and of the torch and Python that built it
        "versions": {
            "nequip": code.import_module("nequip").__version__,
            "e3nn": code.import_module("e3nn").__version__,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            # the version of the kernels (nequip._kernels) the packaged code calls; it runs torch
            # operations where the installed ones are of another version ("none": it calls none)
            "nequip_kernels": str(getattr(code.import_module("nequip.nn.message_passing"), "KERNEL_VERSION", "none")),
        },
        "packaged_by": f"nequip-package (nequip {nequip.__version__})",
        "extern_modules": _extern_versions(exporter.externed_modules()),
        "mocked_modules": sorted({name.partition(".")[0] for name in exporter.mocked_modules()}),
        "model_variants": list(models),
        "type_names": list(model.type_names),
        "r_max": float(model.r_max),
        "model_metadata": dict(model.metadata()),
        "model_config": _plain(model.config),
        "origin": origin,
        "example_data": {
            "origin": example_origin,
            "num_atoms": int(example_frame["pos"].shape[0]),
            "num_edges": int(example_frame["edge_index"].shape[1]),
        },
    }


def _extern_versions(externed_modules: Sequence[str]) -> Dict[str, str]:
    """Installed version of each top-level extern library, apart from the standard library."""
    import sys

    versions = {}
    for top_level in sorted({name.partition(".")[0] for name in externed_modules}):
        if top_level in sys.stdlib_module_names or top_level == "builtins":
            continue
        versions[top_level] = dependencies.installed_version(top_level)
    return versions


def _plain(value):
    """``value`` with tensors, arrays and tuples turned into YAML-safe lists and numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def _verify(
    tmp: Path, output: Path, models: Dict[str, torch.nn.Module], example_frame: Dict[str, torch.Tensor]
) -> None:
    """Require the package written to ``tmp`` to reproduce every model exactly on the example frame."""
    # the temporary file's name does not end in .nequip.zip: call the format's loader directly
    packaged = {variant: PACKAGE_LOADERS[PACKAGE_FORMAT_VERSION](tmp, variant).eval() for variant in models}
    check_reproduces(output, models, packaged, example_frame)


def check_reproduces(
    output: Path,
    models: Dict[str, torch.nn.Module],
    packaged: Dict[str, torch.nn.Module],
    example_frame: Dict[str, torch.Tensor],
) -> None:
    """PackageError unless each ``packaged`` model (read back from the package being written to
    ``output``) predicts exactly what the source model of its variant does on the example frame.

    Runs on one thread: with several, the scatter-adds of the force pass accumulate in a varying
    order, and even one model differs from itself in the last bits from call to call.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for variant, model in models.items():
            expected = model(dict(example_frame))
            actual = packaged[variant](dict(example_frame))
            for key in _OUTPUT_KEYS:
                if key in expected and not _identical(actual[key], expected[key]):
                    raise PackageError(
                        f"{output}: the packaged model (variant {variant!r}) does not reproduce the source model's "
                        f"'{key}' on the example frame; no package was written"
                    )
    finally:
        torch.set_num_threads(threads)


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise-equal values, NaN matching NaN (the stress of a frame without a cell)."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())
