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


# a training step's per-edge tensors, 22 MiB each (the benchmark model's largest at batch 4),
# a dozen alive together and then all freed; page faults per step after three warm-up steps
STEPS = """
import resource, torch
from nequip.utils.memory import keep_freed_memory
applied = keep_freed_memory() if KEEP else None
def step():
    held = [torch.ones(22 << 18) for _ in range(12)]
    del held
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(keep: bool):
    out = subprocess.run([sys.executable, "-c", f"KEEP = {keep}" + STEPS], check=True, capture_output=True, text=True)
    applied, faults = out.stdout.split()
    return applied, float(faults)


def test_training_keeps_freed_memory_for_the_next_step():
    applied, kept = faults_per_step(keep=True)
    _, default = faults_per_step(keep=False)
    assert applied == "True"
    # glibc's defaults give the heap's top back and fault it in again every step
    assert default > 100, f"the pattern no longer faults with glibc's defaults ({default} per step)"
    pages_per_step = 12 * (22 << 20) // 4096
    assert kept < pages_per_step / 1000, f"{kept} page faults per step with freed memory kept"
