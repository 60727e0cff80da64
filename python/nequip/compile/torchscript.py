"""TorchScript backend: a scripted module with the dict interface (FILE_CONTRACT §3)."""

import contextlib
import warnings
from typing import BinaryIO, Iterator, List, Mapping

import torch
from e3nn.util.jit import script as e3nn_script


def script_model(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """Script an eager model, e3nn submodules included.

    ``e3nn.util.jit.script`` compiles every submodule by its e3nn compile mode (codegen
    ``fx.GraphModule``s are made scriptable, ``trace``-mode modules are traced) before
    scripting the whole; plain ``torch.jit.script`` fails on e3nn modules. Works on a copy:
    ``model`` stays eager and is still needed to check the result.
    """
    with _torchscript_not_deprecated():
        return e3nn_script(model, in_place=False)


def operators_called(scripted: torch.jit.ScriptModule) -> List[str]:
    """The operators of NequIP's kernel library (namespace ``nequip``) that any method of
    ``scripted`` or of its submodules calls, sorted: what a runtime must provide to load the file
    (metadata ``nequip_operators``)."""
    names = set()
    for module in scripted.modules():  # the module itself first
        for method in module._c._method_names():
            for node in module._c._get_method(method).graph.nodes():
                names.update(_nequip_operators(node))
    return sorted(names)


def _nequip_operators(node) -> Iterator[str]:
    if node.kind().startswith("nequip::"):
        yield node.kind()
    for block in node.blocks():
        for inner in block.nodes():
            yield from _nequip_operators(inner)


def save(scripted: torch.jit.ScriptModule, file: BinaryIO, metadata: Mapping[str, str]) -> None:
    """Write ``scripted`` to ``file`` with each metadata entry as an extra file named after its key."""
    extra_files = {key: value.encode("ascii") for key, value in metadata.items()}
    with _torchscript_not_deprecated():
        torch.jit.save(scripted, file, _extra_files=extra_files)


@contextlib.contextmanager
def _torchscript_not_deprecated():
    # torch >= 2.10 deprecates torch.jit.*; TorchScript is still the .pth format that the
    # C++ runtime and LAMMPS read, so the warnings say nothing a user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"`torch\.jit\.")
        yield
