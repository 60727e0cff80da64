"""nequip-test: metrics, predictions and parity plots of a model on labelled data.

    nequip-test MODEL DATA [--output DIR] [--index I] [--device D]

MODEL is any model file: a training checkpoint (``*.ckpt``), a package (``*.nequip.zip``) or
a compiled file (``*.nequip.pth``, ``*.nequip.pt2``), which is run by the same C++ runtime as
in ASE and LAMMPS, so what is tested is exactly what runs in MD. DATA is any file ASE reads.
Prints a table of MAE and RMSE (energy per atom, forces, per-type forces, stress: those the
data has labels for) and writes ``predictions.extxyz``, ``parity.png`` (with matplotlib) and
``metrics.json`` to DIR.
"""

import argparse
import sys

PROG = "nequip-test"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Test a NequIP model file on labelled data.")
    parser.add_argument("model", help="checkpoint (.ckpt), package (.nequip.zip) or compiled file (.nequip.pth/.pt2)")
    parser.add_argument("data", help="structures with reference labels (extxyz or any ASE format)")
    parser.add_argument("--output", default="nequip-test", help="output directory (default: %(default)s)")
    parser.add_argument("--index", default=":", help="frames to test, ASE syntax: 0, 10:20, ::2, or --index=-1 (default: all)")
    parser.add_argument("--format", default=None, help="ASE format of DATA (default: from the file name)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:K (default: a compiled file's own device, else cpu)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="frames per call of an eager model")
    parser.add_argument(
        "--energy-units-to-eV", type=float, default=None, help="default: the model's training data setting, or 1"
    )
    parser.add_argument(
        "--length-units-to-A", type=float, default=None, help="default: the model's training data setting, or 1"
    )
    args = parser.parse_args(argv)

    from nequip import _runtime
    from nequip.inference import open_model
    from nequip.inference.evaluation import check_output_dir, data_settings_of, evaluate, format_metrics

    try:
        check_output_dir(args.output)
        model = open_model(args.model, args.device)
        settings = data_settings_of(model)
        for name in ("energy_units_to_eV", "length_units_to_A"):
            if getattr(args, name) is not None:
                settings[name] = getattr(args, name)
        result = evaluate(
            model,
            args.data,
            args.output,
            index=args.index,
            format=args.format,
            batch_size=args.batch_size,
            **settings,
        )
    except (OSError, ValueError, _runtime.Error) as err:
        # FileNotFoundError and write failures are OSErrors, every bad input a ValueError, and
        # what the model's outputs fail (NonFiniteOutputError) the runtime's Error, each with a
        # message that names the file and the problem
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    print(format_metrics(result.metrics))
    print(f"wrote {', '.join(result.written[:-1])} and {result.written[-1]} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
