"""The benchmarks' peak-memory reading."""

import subprocess
import sys

from nequip.utils.memory import peak_rss_mib

BARE = "from nequip.utils.memory import peak_rss_mib; before = peak_rss_mib(); "


def run_bare(code: str) -> list:
    out = subprocess.run([sys.executable, "-c", BARE + code], check=True, capture_output=True, text=True).stdout
    return [float(value) for value in out.split()]


def test_peak_grows_with_written_memory():
    before, after = run_bare("block = b'x' * (64 * 2**20); print(before, peak_rss_mib())")
    assert 60 < after - before < 80


def test_a_child_reports_its_own_peak_not_its_parents():
    # this process holds torch (well over 100 MiB); a bare interpreter started from it holds a
    # few MiB, which ru_maxrss (carried through fork and exec) would not show
    import torch  # noqa: F401

    (child,) = run_bare("print(before)")
    assert peak_rss_mib() > 100
    assert child < 50
