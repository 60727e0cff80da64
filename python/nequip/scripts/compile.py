"""``nequip-compile``: compile a checkpoint or package into a file for ASE and LAMMPS.

    nequip-compile model.nequip.zip model.nequip.pth --mode torchscript --device cpu
    nequip-compile model.nequip.zip model.nequip.pt2 --mode aotinductor --device cpu --target pair_nequip
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from nequip.compile import MODES, TARGETS, CompileError, check_arguments, compile_model
from nequip.compile.contract import DEVICES, EXTENSIONS

PROG = "nequip-compile"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compile a NequIP model (checkpoint or package) for the ASE calculator and "
        "the LAMMPS pair style. The compiled file is checked against the eager model on the "
        "package's example frame before it is written.",
    )
    parser.add_argument("input", type=Path, help="*.ckpt checkpoint or *.nequip.zip package")
    parser.add_argument(
        "output",
        type=Path,
        help="compiled file: " + ", ".join(f"*{ext} for {mode}" for mode, ext in EXTENSIONS.items()),
    )
    # Choices are checked by compile_model, with the same messages as the Python API.
    parser.add_argument("--mode", required=True, help=" | ".join(MODES))
    parser.add_argument("--device", default="cpu", help=" | ".join(DEVICES) + " (default: cpu)")
    parser.add_argument(
        "--target",
        default=None,
        help=" | ".join(TARGETS) + ": order of the flat inputs and outputs of an AOTInductor "
        "file (required with --mode aotinductor; a TorchScript file serves every target)",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    progress = _ProgressToStderr()
    logger = logging.getLogger("nequip.compile")
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    try:
        check_arguments(args.output, args.mode, args.device, args.target)
        if not args.input.is_file():
            raise FileNotFoundError(f"input file {str(args.input)!r} does not exist")
        model, example_data = _load(args.input)
        compile_model(
            model,
            args.output,
            mode=args.mode,
            device=args.device,
            target=args.target,
            example_data=example_data,
        )
    except (ValueError, FileNotFoundError, CompileError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, CompileError) else 1
    finally:
        logger.removeHandler(progress)
    return 0


def _load(path: Path):
    """The eager model and the frame to check it on: a package's own example frame, or
    (checkpoint) None, for compile_model's synthetic frame."""
    # imported here: the package and training stack are heavy, and --help should be quick
    from nequip.package import load_example_data, load_model
    from nequip.package.format import PACKAGE_SUFFIX

    model = load_model(path)
    example_data = load_example_data(path) if path.name.endswith(PACKAGE_SUFFIX) else None
    return model, example_data


class _ProgressToStderr(logging.Handler):
    """Progress messages of nequip.compile, on whatever sys.stderr is when they come."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{PROG}: {record.getMessage()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
