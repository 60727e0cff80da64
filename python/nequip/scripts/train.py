"""nequip-train: train (or resume, or fine-tune) a NequIP model from a YAML configuration.

    nequip-train config.yaml [key.sub=value ...]

The configuration is checked before anything runs; overrides such as ``trainer.max_epochs=10``
are checked the same way. Running the same command again resumes from ``output_dir/last.ckpt``.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nequip-train", description="Train a NequIP model from a YAML configuration."
    )
    parser.add_argument("config", help="YAML configuration file (see examples/minimal.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override configuration values")
    args = parser.parse_args(argv)

    from nequip.train import CheckpointError, ConfigError, load_config, train

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"nequip-train: invalid configuration {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        train(config)
    except ConfigError as err:
        print(f"nequip-train: invalid configuration {args.config}: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"nequip-train: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
