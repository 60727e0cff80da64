"""Model files opened for evaluation: one opener for every kind of file and every caller.

    from nequip.inference import open_model
    model = open_model("model.nequip.pt2")       # or .nequip.pth, .nequip.zip, .ckpt
    out = model(frame)                           # one FILE_CONTRACT §1 frame -> float64 tensors
    outs = model.evaluate(frames, batch_size=8)  # many frames

:func:`open_model` is what the ASE calculator, ``nequip-test`` (:mod:`.evaluation`), the
benchmarks and the compiler's self-check use. Compiled files run on the C++ runtime
(:class:`CompiledModel`, the one Python wrapper of ``nequip._runtime.Model``), checkpoints and
packages as the eager model (:class:`EagerModel`, loaded by :func:`nequip.load.load_model`);
both give the same outputs and raise the same errors for the same faults.
"""

from typing import Optional

from nequip.load import COMPILED_KINDS, model_file_kind

from .opened import OpenedModel, PathLike, has_volume


def open_model(path: PathLike, device: Optional[str] = None) -> OpenedModel:
    """The model file ``path`` (kind from its name: :func:`nequip.load.model_file_kind`), ready to
    evaluate frames on ``device`` ("cpu", "cuda", "cuda:k"; default: a compiled file's own device,
    the CPU for an eager model).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file of another kind, or a damaged or refused one (``ModelFileError``s of
            :mod:`nequip.load` and of the runtime), or a device that is malformed or absent.
    """
    if device is not None and not isinstance(device, str):
        raise ValueError(
            f"device must be a name such as 'cpu', 'cuda' or 'cuda:1', got {device!r} ({type(device).__name__})"
        )
    if model_file_kind(path) in COMPILED_KINDS:
        from .compiled import CompiledModel

        return CompiledModel(path, device)
    from .eager import EagerModel

    return EagerModel(path, device)


__all__ = ["OpenedModel", "has_volume", "open_model"]
