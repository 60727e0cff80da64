"""nequip-train: train (or resume, or fine-tune) a NequIP model from a YAML configuration.

    nequip-train config.yaml [key.sub=value ...]
    nequip-train --schema > nequip-train.schema.json
    nequip-train --convert their.yaml > ours.yaml   # a configuration of the other NequIP release

The configuration is checked before anything runs; overrides such as ``trainer.max_epochs=10``
are checked the same way. Running the same command again resumes from ``output_dir/last.ckpt``.
``--schema`` prints the configuration's JSON Schema (for editors, see docs/configuration.md).

Exit status: 0 when training ran to its end, 1 when it could not go on (a message says why),
2 for a configuration refused before anything ran, 143 when SIGTERM stopped it (last.ckpt is
saved and the message gives the command that resumes it).
"""

import argparse
import json
import shlex
import signal
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nequip-train", description="Train a NequIP model from a YAML configuration."
    )
    parser.add_argument("config", nargs="?", help="YAML configuration file (see examples/minimal.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override configuration values")
    parser.add_argument("--schema", action="store_true", help="print the configuration's JSON Schema and exit")
    parser.add_argument(
        "--convert",
        action="store_true",
        help="print ours for a configuration of the other NequIP release (Hydra, '_target_' keys); the keys it "
        "cannot map go to stderr (and into the output, as comments)",
    )
    args = parser.parse_args(argv)

    if args.convert:
        from nequip.ecosystem.config import convert_config

        if args.config is None or args.overrides:
            parser.error("--convert takes one configuration file")
        try:
            text, unmapped = convert_config(args.config)
        except (OSError, ValueError) as err:
            print(f"nequip-train: {err}", file=sys.stderr)
            return 2
        print(text, end="")
        for line in unmapped:
            print(f"nequip-train: not mapped: {line}", file=sys.stderr)
        return 0

    from nequip.train import CheckpointError, ConfigError, load_config, train
    from nequip.train.callbacks import NonFiniteLossError, TrainingStopped
    from nequip.train.config import json_schema
    from nequip.train.training import DataChangedError, OutputDirInUseError
    from nequip.utils.atomic_io import WriteError

    if args.schema:
        if args.config is not None:
            parser.error("--schema takes no configuration file")
        try:
            print(json.dumps(json_schema(), indent=2))
            sys.stdout.flush()
        except BrokenPipeError:  # `nequip-train --schema | head`: the reader has what it wanted
            sys.stdout = None
        return 0
    if args.config is None:
        parser.error("the following arguments are required: config")

    # a file-size limit (ulimit -f) makes a write fail with EFBIG, reported below, instead of
    # killing the process
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from nequip.ecosystem.config import hydra_refusal

    refusal = hydra_refusal(args.config)
    if refusal is not None:
        print(f"nequip-train: {refusal}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"nequip-train: invalid configuration {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        train(config)
    except TrainingStopped as err:
        # 128 + SIGTERM, as a shell reports a process the signal ended: a job chain stops here
        if err.resumable:
            command = shlex.join(["nequip-train", args.config, *args.overrides])
            print(f"nequip-train: {err}; resume with: {command}", file=sys.stderr)
        else:
            print(f"nequip-train: {err}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ConfigError as err:
        print(f"nequip-train: invalid configuration {args.config}: {err}", file=sys.stderr)
        return 2
    except (
        CheckpointError,
        DataChangedError,
        FileNotFoundError,
        NonFiniteLossError,
        OutputDirInUseError,
        ValueError,
    ) as err:
        print(f"nequip-train: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a write that failed (WriteError names the file) or another OS error
        message = f"{err.filename}: {err.strerror}" if err.filename and not isinstance(err, WriteError) else err
        print(f"nequip-train: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
