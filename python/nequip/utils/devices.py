"""The device an eager model runs on, parsed and checked once for every front end (compiled
files are placed by the C++ runtime, ``nequip._runtime.select_device``)."""

import torch


def torch_device(device: str) -> torch.device:
    """``device`` ("cpu", "cuda" or "cuda:k") as a torch.device that exists here, or one
    ValueError that names the problem and the way out."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"invalid device {str(device)!r}: expected 'cpu', 'cuda' or 'cuda:<index>'")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} requested, but CUDA is not available to this torch "
            f"({torch.__version__}): use device 'cpu', or a CUDA build of torch on a machine with a GPU"
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r} requested, but this machine has {torch.cuda.device_count()} CUDA "
            "device(s): use one of them, or device 'cpu'"
        )
    return parsed
