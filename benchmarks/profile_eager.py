"""Where time and memory go in one eager energy+forces+stress call of the benchmark model.

    .venv/bin/python benchmarks/profile_eager.py --atoms 512

Prints the torch.profiler table (self CPU time, self CPU memory) and the peak of
torch's CPU allocator as seen by the profiler.
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from nequip.benchmark import benchmark_model, sic_supercell
from nequip.data import TypeMapper, from_ase


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--atoms", type=int, default=512)
    parser.add_argument("--sort", default="self_cpu_time_total")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--trace", help="write a chrome trace here")
    args = parser.parse_args(argv)

    model = benchmark_model()
    frame = from_ase(sic_supercell(args.atoms), TypeMapper(model.type_names), model.r_max)
    print(f"atoms {args.atoms}, edges {frame['edge_index'].shape[1]}, threads {torch.get_num_threads()}")
    model(frame)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        model(frame)
    print(prof.key_averages().table(sort_by=args.sort, row_limit=args.rows, max_name_column_width=40))
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
