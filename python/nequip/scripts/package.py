"""``nequip-package``: build packages (``*.nequip.zip``) and inspect them.

    nequip-package build IN OUT.nequip.zip   # IN: a checkpoint (.ckpt) or a package
    nequip-package info PKG [--json]         # metadata, read without unpickling anything
    nequip-package list PKG                  # archive entries and their sizes
"""

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import yaml

from nequip.load import PACKAGE_FORMAT_VERSION, is_ecosystem_package, list_package_entries, read_package_metadata


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nequip-package",
        description="Build a NequIP package (torch.package archive with the model, its code, metadata and an "
        "example frame), or inspect one. Loading a package runs code stored in it: load only packages you "
        "trust ('info' and 'list' never run any).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build a package from a checkpoint or re-package a package")
    build.add_argument("source", metavar="IN", help="a training checkpoint (*.ckpt) or a package (*.nequip.zip)")
    build.add_argument("output", metavar="OUT", help="the package to write (*.nequip.zip)")
    build.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the written package back and comparing its predictions with the source model's",
    )

    info = commands.add_parser("info", help="print a package's metadata (YAML) without loading its model")
    info.add_argument("package", metavar="PKG", help="a package (*.nequip.zip)")
    info.add_argument("--json", action="store_true", help="print JSON instead of YAML")

    listing = commands.add_parser("list", help="list a package's archive entries with their sizes")
    listing.add_argument("package", metavar="PKG", help="a package (*.nequip.zip)")

    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "info":
            return _info(args)
        return _list(args)
    except BrokenPipeError:
        # the reader went away (`nequip-package info --json | head`): stop quietly, and keep
        # Python from failing again on flushing stdout at exit (as the Python docs advise)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as e:
        # PackageError and CheckpointError are ValueErrors, missing files and failed writes
        # OSErrors, each with a message that names the file and what is wrong
        parser.exit(1, f"nequip-package: error: {e}\n")


def _build(args) -> int:
    from nequip.package import build_package

    start = time.perf_counter()
    metadata = build_package(args.source, args.output, verify=args.verify)
    elapsed = time.perf_counter() - start
    if is_ecosystem_package(metadata):
        made = f"the format of nequip {metadata['versions'].get('nequip')}, package_version_id {metadata['package_version_id']}"
    else:
        made = f"format version {metadata['package_format_version']}"
    print(
        f"wrote {args.output} ({made}, "
        f"variants: {', '.join(metadata['model_variants'])}, types: {' '.join(metadata['type_names'])}) "
        f"in {elapsed:.1f} s"
    )
    return 0


def _info(args) -> int:
    metadata = read_package_metadata(args.package, allow_newer=True)
    version = metadata.get("package_format_version", 0)  # none: a package of the other release
    if version > PACKAGE_FORMAT_VERSION:
        print(
            f"nequip-package: warning: {args.package}: package format version {version} is newer than this "
            f"nequip reads ({PACKAGE_FORMAT_VERSION}); showing its metadata as stored",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(metadata, indent=2))
    else:
        print(f"# {args.package}")
        if is_ecosystem_package(metadata):
            print(
                f"# a package of nequip {metadata['versions'].get('nequip')} (the other NequIP release's format, "
                f"package_version_id {metadata['package_version_id']}): its metadata as stored, with type_names and "
                "model_variants added"
            )
        print(yaml.safe_dump(metadata, sort_keys=False), end="")
    sys.stdout.flush()
    return 0


def _list(args) -> int:
    entries = list_package_entries(args.package)
    width = max(len(f"{size:,}") for _, size in entries) if entries else 1
    for name, size in entries:
        print(f"{size:>{width},}  {name}")
    print(f"{len(entries)} entries, {sum(size for _, size in entries):,} bytes")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
