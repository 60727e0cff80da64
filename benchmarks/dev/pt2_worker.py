"""One side of benchmarks/dev/compare_reference.py: load one AOTInductor file, call it on request.

    python benchmarks/dev/pt2_worker.py MODEL.nequip.pt2 INPUTS.pt THREADS

The file is loaded by the C++ runtime (``nequip._runtime.Model``), the one reader of compiled
files, which LAMMPS and the ASE calculator use too; apart from it only torch (to read the inputs)
and a standard-library helper are imported, not ``torch._inductor``'s Python package (~70 MiB):
the peak resident memory of this process is the model's, not the tooling's. Both sides, ours and
the reference's file, are called through the same runtime, so its per-call input checks and
conversions weigh on both alike. Reads commands from stdin, one per line, answers one JSON line
each: ``run K`` -> the seconds of K calls; ``check`` -> the outputs' sums; ``quit`` -> peak memory.
"""

import json
import sys
import time

import torch

from nequip import _runtime
from nequip.utils.memory import peak_rss_mib  # standard library only


def main():
    path, inputs_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    inputs = {name: tensor.contiguous().numpy() for name, tensor in torch.load(inputs_path).items()}
    args = dict(
        pos=inputs["pos"],
        atom_types=inputs["atom_types"],
        edge_index=inputs["edge_index"],
        edge_cell_shift=inputs["edge_cell_shift"],
        cell=inputs["cell"].reshape(3, 3),
    )
    rss_before_load = peak_rss_mib()
    model = _runtime.Model(path, "cpu")
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
                model.compute(**args)
                times.append(time.perf_counter() - start)
            print(json.dumps({"times": times}), flush=True)
        elif command[0] == "check":
            out = model.compute(**args)
            print(json.dumps({"total_energy": out["total_energy"], "forces_abs_sum": float(abs(out["forces"]).sum())}), flush=True)
        elif command[0] == "quit":
            print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)
            return


if __name__ == "__main__":
    main()
