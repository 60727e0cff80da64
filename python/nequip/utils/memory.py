"""Peak resident memory of this process, for the benchmarks (standard library only)."""

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
