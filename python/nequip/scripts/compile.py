"""``nequip-compile``: compile a checkpoint or package into a file for ASE and LAMMPS.

    nequip-compile model.nequip.zip model.nequip.pth --mode torchscript --device cpu
    nequip-compile model.nequip.zip model.nequip.pt2 --mode aotinductor --device cpu --target pair_nequip
    nequip-compile model.nequip.zip model.nequip.pt2 --mode aotinductor --target pair_nequip --portable
    nequip-compile model.nequip.zip model.nequip.pt2 --mode aotinductor --device cuda --target ase [--tf32]
    nequip-compile nequip.net:mir-group/NequIP-OAM-L:0.1 oam.nequip.pt2 --mode aotinductor --target ase
    nequip-compile a.nequip.zip b.nequip.zip c.nequip.zip committee.nequip.pt2 --mode aotinductor --target ase
    nequip-compile a/best.ckpt b/best.ckpt c/best.ckpt committee.nequip.pth --mode torchscript
"""

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import List, Optional

from nequip.compile import (
    DEVICES,
    EXTENSIONS,
    MODES,
    TARGETS,
    CompileError,
    WriteError,
    check_arguments,
    check_committee_arguments,
    compile_model,
)

PROG = "nequip-compile"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compile a NequIP model (checkpoint or package) for the ASE calculator and "
        "the LAMMPS pair style. The compiled file is checked against the eager model on the "
        "package's example frame before it is written. Several models (a committee) make one "
        "file that evaluates them all on one neighbor list and gives their mean and deviations.",
    )
    parser.add_argument(
        "input",
        nargs="+",
        help="*.ckpt checkpoint, *.nequip.zip package, or nequip.net model ID (nequip.net:owner/name:version); "
        "several: a committee of those models (same type names and cutoffs)",
    )
    parser.add_argument(
        "output",
        type=Path,
        help="compiled file: " + ", ".join(f"*{ext} for {mode}" for mode, ext in EXTENSIONS.items()),
    )
    # Choices are checked by compile_model, with the same messages as the Python API.
    parser.add_argument("--mode", required=True, help=" | ".join(MODES))
    parser.add_argument("--device", default="cpu", help=" | ".join(DEVICES) + " (default: cpu)")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="let CUDA matmuls use TensorFloat-32 (faster, ~3 significant digits; recorded in the "
        "file's allow_tf32 and honoured where it runs); off by default",
    )
    parser.add_argument(
        "--target",
        default=None,
        help=" | ".join(TARGETS) + ": order of the flat inputs and outputs of an AOTInductor "
        "file (required with --mode aotinductor; a TorchScript file serves every target)",
    )
    parser.add_argument(
        "--portable",
        action="store_true",
        help="a CPU file of torch operations only, which any NequIP runtime (the other release's "
        "included) can run; by default its message passing calls this runtime's C++ kernels "
        "(faster; runtimes without them refuse the file). CUDA files are always portable",
    )
    parser.add_argument(
        "--committee-drive",
        default=None,
        help="with several models: what gives the energy, forces and stress, the 'mean' of the "
        "models (default) or the 'first' model (DeePMD-kit's way); the others give the deviations",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # A file over the size limit (ulimit -f) kills the process by default: have the write fail
    # (EFBIG) instead, so that it is reported and the staged files are removed.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    progress = _ProgressToStderr()
    logger = logging.getLogger("nequip.compile")
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    try:
        check_arguments(args.output, args.mode, args.device, args.target, args.tf32)
        check_committee_arguments(len(args.input), args.mode, args.target, args.committee_drive)
        if len(args.input) == 1:
            model, example_data = _load(args.input[0])
        else:
            model, example_data = _load_committee(args.input, args.committee_drive or "mean", args.mode)
        compile_model(
            model,
            args.output,
            mode=args.mode,
            device=args.device,
            target=args.target,
            example_data=example_data,
            tf32=args.tf32,
            portable=args.portable,
        )
    except (ValueError, FileNotFoundError, CompileError, WriteError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, (CompileError, WriteError)) else 2
    finally:
        logger.removeHandler(progress)
    return 0


def _load(path: Path):
    """The eager model and the frame to check it on: the model's own example frame (a
    package's stored one; for a checkpoint, the first frame of its training data if it can be
    read, else a synthetic one)."""
    # imported here: the package and training stack are heavy, and --help should be quick
    from nequip.inference.eager import EagerModel

    eager = EagerModel(path)
    example_data, source = eager.example_frame()
    logging.getLogger("nequip.compile").info("example frame: %s", source)
    return eager.module, example_data


def _load_committee(paths: List[str], drive: str, mode: str):
    """The committee of the models of ``paths`` (nequip.model.Committee, which refuses models
    of different type names or cutoffs) and the first model's example frame."""
    from nequip.compile.compiler import TORCHSCRIPT
    from nequip.load import package_importers
    from nequip.model import Committee

    loaded = [_load(path) for path in paths]
    from_packages = [path for path, (model, _) in zip(paths, loaded) if package_importers(model)]
    # Each package's code is imported under a name of its own (torch.package), and a TorchScript
    # file keeps the second package's class names, which no runtime can resolve when it loads.
    if mode == TORCHSCRIPT and len(from_packages) > 1:
        raise ValueError(
            f"{len(from_packages)} of the committee's models come from packages ({', '.join(from_packages)}), "
            "whose code TorchScript cannot put in one .nequip.pth; compile the committee with "
            "--mode aotinductor (.nequip.pt2), or from the models' checkpoints (.ckpt)"
        )
    committee = Committee([model for model, _ in loaded], names=[str(path) for path in paths], drive=drive)
    return committee, loaded[0][1]


class _ProgressToStderr(logging.Handler):
    """Progress messages of nequip.compile, on whatever sys.stderr is when they come."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{PROG}: {record.getMessage()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
