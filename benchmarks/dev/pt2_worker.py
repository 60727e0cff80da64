"""One side of benchmarks/compare_reference.py: load one AOTInductor file, call it on request.

    python benchmarks/pt2_worker.py MODEL.nequip.pt2 INPUTS.pt THREADS

Only torch (and a standard-library helper) is imported, and the file is loaded with torch's C++ package loader (as the LAMMPS
plugin does) rather than ``torch._inductor.aoti_load_package``, whose Python package adds
~70 MiB: the peak resident memory of this process is the model's, not the tooling's. Reads
commands from stdin, one per line, answers one JSON line each:
``run K`` -> the seconds of K calls; ``check`` -> the outputs' sums; ``quit`` -> peak memory.
"""

import json
import sys
import time

import torch

from nequip.utils.memory import peak_rss_mib  # standard library only


def main():
    path, inputs_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    inputs = torch.load(inputs_path)
    args = [inputs[name].contiguous() for name in ("pos", "edge_index", "atom_types", "cell", "edge_cell_shift")]
    rss_before_load = peak_rss_mib()
    model = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1).run
    rss_loaded = peak_rss_mib()
    print(json.dumps({"ready": True, "rss_loaded_mib": rss_loaded, "rss_torch_mib": rss_before_load}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "run":
            times = []
            for _ in range(int(command[1])):
                start = time.perf_counter()
                model(args)
                times.append(time.perf_counter() - start)
            print(json.dumps({"times": times}), flush=True)
        elif command[0] == "check":
            # ase target order: atomic_energy, total_energy, forces, stress
            out = model(args)
            print(json.dumps({"total_energy": float(out[1].sum()), "forces_abs_sum": float(out[2].abs().sum())}), flush=True)
        elif command[0] == "quit":
            print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)
            return


if __name__ == "__main__":
    main()
