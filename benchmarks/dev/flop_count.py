"""Arithmetic of the benchmark model's energy + forces + stress call, counted from the model's
own shapes (issue 22), beside the machine's float32 matmul rate on the radial MLP's shapes.

    .venv/bin/python benchmarks/dev/flop_count.py [--model benchmark.nequip.pt2] [--sizes 512 4096] [--json out.json]

Counts follow the implementation (nequip.nn.message_passing, nequip.nn.radial): the forward
pass, then the force pass, which differentiates with respect to node features, edge harmonics
and the radial embedding (never the weights) and recomputes the radial MLP and each path
group's A and weights instead of keeping them. A multiply-add is 2 FLOP, any other elementary
operation 1. Node-wise work (linears, self-connections, gates) is per node, shown per edge by
dividing by the system's edges per atom. With --model, the file's call is timed through the C++
runtime in the same run, which gives the achieved rate of the whole call.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

PARTS = (
    "radial MLP matmuls",
    "tensor-product contractions (and gradients)",
    "gathers and neighbor sums",
    "node-wise linears, self-connections, gates",
    "edge geometry, forces and virial",
)


def linear_macs(linear) -> int:
    """Multiply-adds per node of an e3nn o3.Linear."""
    return sum(
        ins.path_shape[0] * ins.path_shape[1] * linear.irreps_out[ins.i_out].ir.dim for ins in linear.instructions
    )


def tensor_product_macs(tp) -> int:
    """Multiply-adds per node of an e3nn FullyConnectedTensorProduct with scalar second input
    (the self-connection on one-hot types): mul1 * mul2 * mul3 * (2l+1) per path."""
    macs = 0
    for ins in tp.instructions:
        mul1, mul2, mul3 = tp.irreps_in1[ins.i_in1].mul, tp.irreps_in2[ins.i_in2].mul, tp.irreps_out[ins.i_out].mul
        macs += mul1 * mul2 * mul3 * tp.irreps_out[ins.i_out].ir.dim
    return macs


def count(model, edges_per_atom: float):
    """FLOP per edge of each part, forward and force pass, summed over the layers."""
    forward = dict.fromkeys(PARTS, 0.0)
    backward = dict.fromkeys(PARTS, 0.0)
    sh_dim = model.spherical_harmonics.irreps_out.dim
    for layer in model.layers:
        interaction = layer.interaction
        tp = interaction.tensor_product
        sizes = [w.shape for w in tp.radial_mlp.scaled_weights()]
        hidden_macs = sum(a * b for a, b in sizes[:-1])
        width = sizes[-1][0]
        forward["radial MLP matmuls"] += 2 * hidden_macs
        # the force pass: the hidden layers again (not kept), then back through them to the embedding
        backward["radial MLP matmuls"] += 2 * hidden_macs + 2 * hidden_macs
        for g in tp.groups:
            columns = g.num_paths * g.mul  # per-edge path weights of the group
            message = g.num_paths * g.d3 * g.mul
            contraction = g.d1 * message  # sum_i x[j, i, u] A[i, path, k]: multiply-adds
            a_macs = sh_dim * g.d1 * g.num_paths * g.d3
            forward["radial MLP matmuls"] += 2 * width * columns
            forward["tensor-product contractions (and gradients)"] += 2 * a_macs + 2 * contraction + message
            forward["gathers and neighbor sums"] += message  # the scatter-add
            # force pass: weights and A again; grad_w and its matmul back to the hidden layer;
            # the weighted output gradient; d/dA and through A to Y; d/dx
            backward["radial MLP matmuls"] += 2 * width * columns + 2 * columns * width
            backward["tensor-product contractions (and gradients)"] += (
                2 * a_macs + 2 * contraction + 2 * message + message + 2 * contraction + 2 * a_macs + 2 * contraction
            )
            backward["gathers and neighbor sums"] += g.d1 * g.mul  # scatter of d/dx onto the neighbors
        # silu and its derivative on the hidden layers: about 4 and 6 operations per value
        hidden_values = sum(b for _, b in sizes[:-1])
        forward["radial MLP matmuls"] += 4 * hidden_values
        backward["radial MLP matmuls"] += 4 * hidden_values + 6 * hidden_values
        node = 2 * (linear_macs(interaction.linear_1) + linear_macs(interaction.linear_2))
        node += 2 * tensor_product_macs(interaction.self_connection)
        node += 5 * layer.gate.irreps_in.dim  # activations and gating products
        forward["node-wise linears, self-connections, gates"] += node / edges_per_atom
        backward["node-wise linears, self-connections, gates"] += node / edges_per_atom  # transposed, same size
    # edge vector, length, harmonics (l <= 2), Bessel basis and envelope, each about this many
    # operations; the force pass: their derivatives, forces (6 adds) and edge virials (18)
    geometry = 12 + 6 + 30 + 6 * model.config["num_bessels"]
    forward["edge geometry, forces and virial"] += geometry + 20
    backward["edge geometry, forces and virial"] += 2 * geometry + 6 + 18 + 20
    return forward, backward


def matmul_rate(num_edges: int, shapes, repeats: int = 5) -> float:
    """float32 GFLOP/s of (E, k) @ (k, n) for the radial MLP's (k, n) shapes, median of repeats,
    into an output allocated once (as the compiled model's memory plan does)."""
    rates = []
    for k, n in shapes:
        a, b, out = torch.randn(num_edges, k), torch.randn(k, n), torch.empty(num_edges, n)
        torch.mm(a, b, out=out)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - start)
        rates.append(2 * num_edges * k * n / statistics.median(times) / 1e9)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a .nequip.pt2 of the benchmark model to time")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nequip.benchmark import benchmark_model, machine_description, sic_supercell
    from nequip.data import TypeMapper, compute_neighbor_list

    model = benchmark_model()
    runtime = None
    if args.model:
        from nequip import _runtime

        runtime = _runtime.Model(str(args.model))
    record = dict(date=time.strftime("%Y-%m-%d"), machine=machine_description(), threads=args.threads, sizes={})
    for num_atoms in args.sizes:
        atoms = sic_supercell(num_atoms)
        edge_index, shift = compute_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.r_max)
        num_edges = edge_index.shape[1]
        forward, backward = count(model, num_edges / num_atoms)
        total = sum(forward.values()) + sum(backward.values())
        shapes = sorted({tuple(w.shape) for layer in model.layers for w in layer.interaction.tensor_product.radial_mlp.scaled_weights()})
        rates = matmul_rate(num_edges, shapes)
        entry = dict(
            edges=num_edges,
            flop_per_edge={part: dict(forward=forward[part], forces=backward[part]) for part in PARTS},
            gflop_per_call=total * num_edges / 1e9,
            matmul_gflops={f"{k}x{n}": rate for (k, n), rate in zip(shapes, rates)},
        )
        print(f"\n{num_atoms} atoms, {num_edges} edges, {args.threads} threads")
        print("| part | FLOP/edge forward | FLOP/edge force pass | share of the arithmetic |")
        print("|---|---:|---:|---:|")
        for part in PARTS:
            share = (forward[part] + backward[part]) / total
            print(f"| {part} | {forward[part]:,.0f} | {backward[part]:,.0f} | {100 * share:.1f}% |")
        print(f"| total | {sum(forward.values()):,.0f} | {sum(backward.values()):,.0f} | {total * num_edges / 1e9:.1f} GFLOP per call |")
        print("float32 matmul (E, k) @ (k, n) of the radial MLP's shapes: "
              + ", ".join(f"{k}x{n}: {rate:.1f} GFLOP/s" for (k, n), rate in zip(shapes, rates)))
        if runtime is not None:
            inputs = (atoms.positions, TypeMapper(model.type_names)(atoms.get_chemical_symbols()), edge_index, shift, atoms.cell.array)
            runtime.compute(*inputs)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                runtime.compute(*inputs)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            entry.update(seconds_per_call=seconds, achieved_gflops=total * num_edges / seconds / 1e9)
            print(f"the call: {seconds:.2f} s, {entry['achieved_gflops']:.1f} GFLOP/s achieved "
                  f"({entry['achieved_gflops'] / max(rates):.2f} of the best matmul rate)")
        record["sizes"][num_atoms] = entry
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
