"""The device an eager model or a compile runs on. Device names have one parser, the C++
runtime's (``nequip._runtime.parse_device``), which also places compiled files and checks
LAMMPS' ``pair_style nequip device``: every front end accepts the same names and gives the
same messages."""

import torch


def torch_device(device: str) -> torch.device:
    """``device`` ("cpu", "cuda" or "cuda:k") as a torch.device that exists here, or one
    ValueError (the runtime's DeviceError) that names the problem and the way out."""
    from nequip import _runtime

    if not isinstance(device, str):
        # what the runtime would say of the name; a non-string has none to parse
        raise _runtime.DeviceError(f"invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:<index>'")
    return torch.device(_runtime.parse_device(device))
