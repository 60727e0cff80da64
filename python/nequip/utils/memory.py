"""Memory of this process: its peak (for the benchmarks) and what glibc does with freed blocks
(for training)."""

import resource


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux's ``VmHWM`` belongs to the running program image. ``ru_maxrss`` is carried over from
    the parent through fork and exec, so a benchmark started by a larger process would report
    at least the parent's peak; it is the fallback where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# what training sets: blocks up to glibc's largest mmap threshold come from the heap, and the
# heap keeps up to 1 GiB of freed memory at its top instead of returning it to the kernel
TRAINING_MALLOC = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20))


def keep_freed_memory() -> bool:
    """Have glibc keep the memory a training step frees for the next step; True where applied.

    Each step allocates and frees the same per-edge tensors, tens of MiB each. With glibc's
    defaults each one is mapped fresh from the kernel and unmapped when freed (or the heap's top
    is trimmed), so every step faults their pages in again, a part of the benchmark model's step
    time that this removes (docs/benchmarks.md, "Training throughput"). The cost is that up to
    1 GiB freed at the heap's top stays with the process. A no-op (False) where the C library is
    not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success
    return all(mallopt(parameter, value) == 1 for parameter, value in TRAINING_MALLOC)
