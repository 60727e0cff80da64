"""nequip-test: metrics, predictions and parity plots of a trained model on labelled data.

    nequip-test MODEL DATA [--output DIR]

MODEL is a training checkpoint (``*.ckpt``) or a package (``*.nequip.zip``); DATA any file
ASE reads. Prints a table of MAE and RMSE (energy per atom, forces, per-type forces, stress)
and writes ``predictions.extxyz``, ``parity.png`` and ``metrics.json`` to DIR.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nequip-test", description="Test a trained NequIP model on labelled data.")
    parser.add_argument("model", help="checkpoint (.ckpt) or package (.nequip.zip)")
    parser.add_argument("data", help="structures with reference labels (extxyz or any ASE format)")
    parser.add_argument("--output", default="nequip-test", help="output directory (default: %(default)s)")
    parser.add_argument("--index", default=":", help="ASE index of the frames to test (default: all)")
    parser.add_argument("--format", default=None, help="ASE format of DATA (default: from the file name)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--energy-units-to-eV", type=float, default=None, help="default: the checkpoint's training data setting, or 1"
    )
    parser.add_argument(
        "--length-units-to-A", type=float, default=None, help="default: the checkpoint's training data setting, or 1"
    )
    args = parser.parse_args(argv)

    from nequip.train.evaluation import evaluate, format_metrics

    try:
        metrics = evaluate(
            args.model,
            args.data,
            args.output,
            index=args.index,
            format=args.format,
            batch_size=args.batch_size,
            energy_units_to_eV=args.energy_units_to_eV,
            length_units_to_A=args.length_units_to_A,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"nequip-test: {err}", file=sys.stderr)
        return 1
    print(format_metrics(metrics))
    print(f"wrote predictions.extxyz, parity.png and metrics.json to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
