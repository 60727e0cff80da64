"""Where the time of one call goes (issue 22): the benchmark model's .pt2 compiled with
inductor's kernel profiling (TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1), each kernel of one call
timed with torch's profiler through the C++ runtime, and assigned to a part of the model from
the package's own generated code, beside the FLOP count of each part (flop_count.py) and the
machine's float32 matmul rate on the radial MLP's shapes, measured in the same run.

    TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1 .venv/bin/python benchmarks/dev/profile_call.py \\
        --compile build/profile/benchmark_profiled.nequip.pt2 --sizes 512 4096 --json build/profile/profile.json

How kernels are assigned (the wrapper code calls them in a fixed order, which the profiler's
events follow): a matmul (mm, addmm) whose output has a row per edge is the radial MLP's,
unless its output has the harmonics' width or a path group's A width (then it is the tensor
product's); a matmul over nodes is node-wise; a fused kernel given the edge count is per-edge
work: the radial MLP's activations when it applies SiLU and gathers and scatters nothing, else
the tensor product's contractions, which inductor fuses with their gathers and neighbor sums
(one row of the table); a fused kernel over nodes only is node-wise (linears, self-connections,
gates); the first kernel (edge vectors, harmonics, Bessel basis) and the rest are "everything
else". In a file made with the message passing's kernels (the default), their calls
(``nequip::message_forward_v1``, ``message_backward_v1``, through the proxy executor) are
contractions too. The profiled file is a little slower than a plain one (one profiler event per kernel).
"""

import argparse
import json
import os
import re
import statistics
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from flop_count import count, matmul_rate  # noqa: E402

RADIAL, CONTRACTIONS, NODES, OTHER = (
    "radial MLP (matmuls and activations)",
    "tensor-product contractions with their gathers and neighbor sums",
    "node-wise linears, self-connections, gates",
    "everything else (edge geometry, forces, virial, copies)",
)
ROWS = (RADIAL, CONTRACTIONS, NODES, OTHER)
# flop_count's parts, summed into the rows the profile can tell apart
FLOP_ROWS = {
    "radial MLP matmuls": RADIAL,
    "tensor-product contractions (and gradients)": CONTRACTIONS,
    "gathers and neighbor sums": CONTRACTIONS,
    "node-wise linears, self-connections, gates": NODES,
    "edge geometry, forces and virial": OTHER,
}


def kernel_calls(package: Path, a_widths, sh_dim: int):
    """The (name, row) of every kernel call of the package's wrapper code, in call order."""
    with zipfile.ZipFile(package) as archive:
        wrapper = next(name for name in archive.namelist() if name.endswith(".wrapper.cpp"))
        source = archive.read(wrapper).decode()
        extern = wrapper.replace(".wrapper.cpp", ".wrapper.json")
        # the operators called through the proxy executor (custom ops), by call index
        nodes = json.loads(archive.read(extern))["nodes"] if extern in archive.namelist() else []
    extern_targets = [node["node"]["target"] for node in nodes]
    # the symbols of the dynamic sizes: pos is (N, 3), edge_index (2, E); and their aliases
    sizes = re.findall(r"\n\s*(?:auto|int64_t|const int64_t) (s\d+) = \w+?_size\[(\d)\];", source)
    edge_symbols = {name for name, dim in sizes if dim == "1"}
    for alias, target in re.findall(r"\n\s*(?:auto|int64_t|const int64_t) (s\d+) = (s\d+);", source):
        if target in edge_symbols:
            edge_symbols.add(alias)
    arrays = dict(re.findall(r"int64_t (int_array_\d+)\[\] = \{([^}]*)\};", source))
    # the shape of every buffer taken from a memory pool or allocated
    buffer_shapes = {
        buffer: arrays.get(shape, "")
        for shape, buffer in re.findall(
            r"\d+, (int_array_\d+), int_array_\d+, &tmp_tensor_handle_\d+\)\);\n\s*auto (buf\d+) =", source
        )
    }
    calls = []
    first = True
    kernel_blocks = re.finditer(r'KernelContextGuard _ctx\("([^"]+)"[^\n]*\n(.*?)\n\s*\}', source, re.S)
    # the message passing's kernels (nequip::message_*), called through the proxy executor
    proxy_calls = re.finditer(r"aoti_torch_proxy_executor_call_function\(proxy_executor, (\d+),", source)
    events = sorted(
        [(m.start(), m.group(1), m.group(2)) for m in kernel_blocks]
        + [(m.start(), extern_targets[int(m.group(1))], None) for m in proxy_calls
           if extern_targets[int(m.group(1))].startswith("nequip::")],
    )  # fmt: skip
    for _, name, body in events:
        if body is None:
            calls.append((name, CONTRACTIONS))
            continue
        per_edge = bool(set(re.findall(r"\bs\d+\b", body)) & edge_symbols)
        if first:
            row = OTHER  # edge vectors, lengths, harmonics, Bessel basis, envelope
            first = False
        elif name.startswith("aoti_torch_cpu_") and name.endswith("mm_out"):
            output = re.search(r"aoti_torch_cpu_\w+\((\w+),", body)
            shape = buffer_shapes.get(output.group(1), "") if output else ""
            parts = [part.strip() for part in shape.split(",")]
            rows_per_edge = bool(parts) and bool(set(re.findall(r"\bs\d+\b", parts[0])) & edge_symbols)
            columns = parts[-1].rstrip("L") if parts else ""
            if "bmm" in name:
                row = CONTRACTIONS
            elif rows_per_edge or (not shape and per_edge):
                row = CONTRACTIONS if columns.isdigit() and int(columns) in a_widths | {sh_dim} else RADIAL
            else:
                row = NODES
        elif name.startswith("cpp_fused"):
            if not per_edge:
                row = NODES
            elif "silu" in name and not re.search(r"index_select|scatter|gather|index_add", name):
                row = RADIAL
            elif re.search(r"index_select|scatter|gather|index_add|bmm", name):
                row = CONTRACTIONS
            else:
                row = OTHER
        else:
            row = OTHER
        calls.append((name, row))
    return calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", help="a profiled .nequip.pt2 of the benchmark model")
    parser.add_argument("--compile", type=Path, help="compile the profiled file here first (needs the environment variable)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from nequip import _runtime
    from nequip.benchmark import benchmark_model, machine_description, sic_supercell
    from nequip.compile import compile_model
    from nequip.data import TypeMapper, compute_neighbor_list

    model = benchmark_model()
    path = args.model or args.compile
    if args.compile:
        if os.environ.get("TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE") != "1":
            parser.error("--compile needs TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE=1 in the environment")
        args.compile.parent.mkdir(parents=True, exist_ok=True)
        compile_model(model, args.compile, mode="aotinductor", device="cpu", target="ase")
    a_widths = {g.d1 * g.num_paths * g.d3 for layer in model.layers for g in layer.interaction.tensor_product.groups}
    calls = kernel_calls(path, a_widths, model.spherical_harmonics.irreps_out.dim)
    runtime = _runtime.Model(str(path))
    record = dict(date=time.strftime("%Y-%m-%d"), machine=machine_description(), threads=args.threads, sizes={})
    for num_atoms in args.sizes:
        atoms = sic_supercell(num_atoms)
        edge_index, shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.r_max)
        num_edges = edge_index.shape[1]
        inputs = (atoms.positions, TypeMapper(model.type_names)(atoms.get_chemical_symbols()), edge_index, shift, atoms.cell.array)
        runtime.compute(*inputs)
        row_seconds = defaultdict(list)
        walls = []
        for _ in range(args.repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                runtime.compute(*inputs)
                walls.append(time.perf_counter() - start)
            kernels = sorted(
                (e for e in prof.events()
                 if e.name.startswith(("graph_0_cpp_fused", "nequip::")) or re.fullmatch(r"aoti_torch_cpu_\w+", e.name)),
                key=lambda e: e.time_range.start,
            )
            if len(kernels) != len(calls) or any(not e.name.endswith(name) for e, (name, _) in zip(kernels, calls)):
                raise SystemExit(f"{len(kernels)} kernel events for {len(calls)} kernel calls in the wrapper: not aligned")
            seconds = defaultdict(float)
            for event, (_, row) in zip(kernels, calls):
                seconds[row] += event.cpu_time_total / 1e6
            for row in ROWS:
                row_seconds[row].append(seconds[row])
        wall = statistics.median(walls)
        forward, backward = count(model, num_edges / num_atoms)
        flop = defaultdict(float)
        for part, row in FLOP_ROWS.items():
            flop[row] += (forward[part] + backward[part]) * num_edges
        shapes = sorted({tuple(w.shape) for layer in model.layers for w in layer.interaction.tensor_product.radial_mlp.scaled_weights()})
        rates = dict(zip((f"{k}x{n}" for k, n in shapes), matmul_rate(num_edges, shapes)))
        best = max(rates.values())
        print(f"\n{num_atoms} atoms ({num_edges} edges), {args.threads} threads: profiled call {wall:.2f} s "
              f"(median of {args.repeats}); float32 matmul of the radial MLP's shapes: "
              + ", ".join(f"{shape} {rate:.1f}" for shape, rate in rates.items()) + " GFLOP/s")
        print("| part | share of the call | GFLOP per call | achieved GFLOP/s | / best matmul rate |")
        print("|---|---:|---:|---:|---:|")
        entry = dict(edges=num_edges, seconds_per_call=wall, matmul_gflops=rates, parts={})
        kernel_total = 0.0
        for row in ROWS:
            seconds = statistics.median(row_seconds[row])
            kernel_total += seconds
            gflops = flop[row] / 1e9 / seconds if seconds else float("nan")
            entry["parts"][row] = dict(seconds=seconds, share=seconds / wall, gflop=flop[row] / 1e9, gflops=gflops)
            print(f"| {row} | {100 * seconds / wall:.1f}% | {flop[row] / 1e9:.2f} | {gflops:.1f} | {gflops / best:.2f} |")
        outside = wall - kernel_total
        entry["outside_kernels_seconds"] = outside
        print(f"| outside the kernels (runtime checks, copies, allocation) | {100 * outside / wall:.1f}% | | | |")
        total_flop = sum(flop.values()) / 1e9
        print(f"| whole call | 100% | {total_flop:.2f} | {total_flop / wall:.1f} | {total_flop / wall / best:.2f} |")
        record["sizes"][num_atoms] = entry
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
