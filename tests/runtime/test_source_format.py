"""The C++ of the runtime and the LAMMPS plugin is in the style of its .clang-format (run
`make format` to apply it)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = ("cpp/src/*.cpp", "cpp/src/*.h", "cpp/include/nequip/*.h", "cpp/python/*.cpp", "lammps_plugin/*.cpp", "lammps_plugin/*.h")


def test_cpp_sources_are_formatted():
    clang_format = shutil.which("clang-format", path=str(Path(sys.executable).parent))
    assert clang_format, "clang-format is missing: install the test extra (pip install -e '.[test]')"
    sources = sorted(str(path) for pattern in PATTERNS for path in ROOT.glob(pattern))
    assert len(sources) >= 20
    checked = subprocess.run([clang_format, "--dry-run", "--Werror", *sources], capture_output=True, text=True)
    assert checked.returncode == 0, f"run `make format`:\n{checked.stderr[:3000]}"
