"""The benchmarks' peak-memory reading."""

import subprocess
import sys

from nequip.utils.memory import peak_rss_mib

BARE = "from nequip.utils.memory import peak_rss_mib; before = peak_rss_mib(); "


def run_python(code: str) -> list:
    """What a fresh interpreter running ``code`` prints, split into words."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()


def run_bare(code: str) -> list:
    return [float(value) for value in run_python(BARE + code)]


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


# In a bare interpreter: where glibc puts a 20 MiB block, and what is left of its heap once the
# block is freed. With glibc's defaults a fresh process maps so large a block by itself (mmap
# threshold 128 KiB until a larger mapped block is freed) and unmaps it when freed.
HEAP_BLOCK = """
import ctypes
from nequip.utils.memory import keep_freed_memory
applied = keep_freed_memory() if KEEP else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            return [int(address, 16) for address in line.split()[0].split("-")]
    return [0, 0]
block = libc.malloc(20 << 20)
start, end = heap()
on_heap = start <= block < end
libc.free(block)
start, end = heap()
print(applied, on_heap, (end - start) >> 20)
"""


def heap_block(keep: bool):
    applied, on_heap, heap_mib = run_python(f"KEEP = {keep}" + HEAP_BLOCK)
    return applied, on_heap == "True", int(heap_mib)


def test_training_keeps_freed_memory_on_the_heap():
    applied, on_heap, heap_mib = heap_block(keep=True)
    assert applied == "True"
    # from the heap, not mapped by itself; and once freed, kept there rather than given back
    assert on_heap
    assert heap_mib >= 20
    # the control: with glibc's defaults the same block is mapped by itself
    _, default_on_heap, _ = heap_block(keep=False)
    assert not default_on_heap


# a training step's per-edge tensors, 22 MiB each (the benchmark model's largest at batch 4),
# a dozen alive together and then all freed; page faults per step after three warm-up steps
STEPS = """
import resource, torch
from nequip.utils.memory import keep_freed_memory
assert keep_freed_memory()
def step():
    held = [torch.ones(22 << 18) for _ in range(12)]
    del held
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_training_steps_fault_in_no_pages_once_warm():
    (faults,) = map(float, run_python(STEPS))
    pages_per_step = 12 * (22 << 20) // 4096
    assert faults < pages_per_step / 1000, f"{faults} page faults per step with freed memory kept"
