"""Prototype (issue 34 item 9): LAMMPS' per-layer feature exchange as a functional custom operator
inside one traced graph, where a ``pair_nequip_domain`` file has the model split into parts.

    .venv/bin/python benchmarks/dev/exchange_prototype.py --out build/exchange_prototype
    .venv/bin/python benchmarks/dev/exchange_prototype.py --out build/exchange_benchmark --benchmark-model \\
        --sizes 512 4096 --rounds 3 --threads 1 --json build/exchange_benchmark/report.json

1. ``nequip_prototype::exchange(features, handle, reverse)``, registered here in Python: the
   exchanger registered under ``handle`` (a graph input, so a runtime choice) copies every owner's
   features to its ghosts, or, reversed, sums the ghosts' rows onto their owners (ghosts zero);
   handle 0 is the identity. Its derivative is the exchange in the other direction.
2. The model with an exchange after every layer but the last (what the runtime's
   ``compute_exchanging`` does between parts), the energy of owned atoms and the forces by
   autograd, traced as nequip.compile.aotinductor traces (make_fx, the ``inductor`` backend,
   the same graph rewrites), exported with dynamic nodes and edges and compiled by AOTInductor
   with nequip's settings; loaded with ``torch._inductor.aoti_load_package`` (the operator is
   called through AOTInductor's proxy executor, i.e. torch's dispatcher).
3. On a periodic frame whose images are ghost nodes (``images_as_ghosts``): the calls the file
   makes to the exchange, in order, each with its input against the eager model's; energy and
   forces (folded onto the atoms) against the eager model on the periodic frame; where the
   generated wrapper calls the operator among its kernels.
4. Time per call, alternating, on those nodes: the one-graph file against a ``pair_nequip_domain``
   file of the same weights, its parts (``compute_exchanging``) and its whole model on the periodic
   frame (``compute``).
"""

import argparse
import json
import re
import statistics
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

EXCHANGERS: Dict[int, Callable[[torch.Tensor, bool], torch.Tensor]] = {}


@torch.library.custom_op("nequip_prototype::exchange", mutates_args=())
def exchange(features: torch.Tensor, handle: torch.Tensor, reverse: bool) -> torch.Tensor:
    exchanger = EXCHANGERS.get(int(handle))
    return features.clone() if exchanger is None else exchanger(features, reverse)


@exchange.register_fake
def _(features, handle, reverse):
    return torch.empty_like(features)


def _setup(ctx, inputs, output):
    ctx.handle, ctx.reverse = inputs[1], inputs[2]


def _backward(ctx, grad):
    return exchange(grad, ctx.handle, not ctx.reverse), None, None


exchange.register_autograd(_backward, setup_context=_setup)


class OwnerExchange:
    """One process standing in for the ranks: ghosts are copies of owned nodes (``owner``);
    rows past ``owner`` (the model's reference atoms) are left as they are. Records each call."""

    def __init__(self, owner: torch.Tensor):
        self.owner = owner
        self.calls: List[tuple] = []

    def __call__(self, features: torch.Tensor, reverse: bool) -> torch.Tensor:
        self.calls.append(("reverse" if reverse else "forward", features.double().norm().item()))
        nodes = self.owner.shape[0]
        out = features.clone()
        if reverse:
            # the ghosts' gradients summed onto their owners, ghosts zero (adjoint of the copy)
            out[:nodes] = torch.zeros_like(features[:nodes]).index_add(0, self.owner, features[:nodes])
        else:
            out[:nodes] = features[:nodes][self.owner]
        return out


class ExchangingModel(torch.nn.Module):
    """pos (nodes, 3) float64, edge_index (2, E) from owned centers, atom_types (nodes,),
    local_mask (nodes,), handle () int64 -> atomic energies (nodes, 1) (0 off the mask) and
    forces (nodes, 3) on every node (a ghost's belong to its owner)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pos, edge_index, atom_types, local_mask, handle):
        model = self.model
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            edge_vec = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0])
            edge_sh, edge_radial = model.edge_embedding(edge_vec, atom_types, edge_index)
            node_attrs = model.node_attributes(atom_types)
            x = model.node_embedding(node_attrs)
            for k in range(len(model.layers)):
                x = model.layer(k, x, node_attrs, edge_sh, edge_radial, edge_index)
                if k + 1 < len(model.layers):
                    x = exchange(x, handle, False)
            atomic_energy = model.energy_readout(x, atom_types)
            atomic_energy = torch.where(local_mask.unsqueeze(-1), atomic_energy, torch.zeros_like(atomic_energy))
            (grad,) = torch.autograd.grad(atomic_energy.sum(), pos)
        return atomic_energy.detach(), -grad


def domain_frame(model, num_atoms: int):
    """The benchmark system's periodic frame and its images as ghost nodes."""
    from nequip.benchmark.systems import system_for
    from nequip.data import TypeMapper, from_ase
    from nequip.inference.compiled import images_as_ghosts

    atoms = system_for(model.type_names, num_atoms)
    frame = from_ase(atoms, TypeMapper(model.type_names), model.r_max, labels=())
    pos, edge_index, owner = images_as_ghosts(
        frame["pos"].numpy(), frame["edge_index"].numpy(), frame["edge_cell_shift"].numpy(), frame["cell"].numpy()
    )
    nodes = {
        "pos": torch.from_numpy(pos).contiguous(),
        "edge_index": torch.from_numpy(edge_index).contiguous(),
        "atom_types": frame["atom_types"][owner].contiguous(),
        "local_mask": torch.from_numpy(owner == np.arange(len(owner))),
        "owner": torch.from_numpy(owner),
    }
    return frame, nodes


def flat_inputs(nodes, handle: int):
    return (nodes["pos"], nodes["edge_index"], nodes["atom_types"], nodes["local_mask"], torch.tensor(handle))


def compile_one_graph(model, trace_nodes, export_nodes, path: Path, log) -> Path:
    """Trace, export and compile ExchangingModel the way nequip.compile.aotinductor does: traced on
    small inputs, exported on inputs of the typical size (Inductor's size hints)."""
    from nequip.compile import aotinductor

    flat = ExchangingModel(model).eval()
    inputs = flat_inputs(trace_nodes, 0)
    log("tracing (make_fx, inductor backend)")
    traced = aotinductor._trace(flat, inputs)
    aotinductor.sum_scatters_into_one_row(traced)
    aotinductor.materialize_gathered(traced)
    order = [
        ("reverse" if node.args[2] else "forward")
        for node in traced.graph.nodes
        if node.target is torch.ops.nequip_prototype.exchange.default
    ]
    log(f"traced graph: {len(traced.graph.nodes)} nodes, exchanges in order {order}")
    node_dim = torch.export.Dim("nodes", min=2)
    edge_dim = torch.export.Dim("edges", min=2)
    exported = torch.export.export(
        traced,
        flat_inputs(export_nodes, 0),
        dynamic_shapes=({0: node_dim}, {1: edge_dim}, {0: node_dim}, {0: node_dim}, None),
        strict=False,
    )
    log("compiling (AOTInductor)")
    with open(path, "wb") as file:
        aotinductor.package(exported, file, {"prototype": "exchange"})
    return path


def wrapper_call_order(path: Path) -> List[str]:
    """The generated wrapper's calls in its run function, in order: kernels compressed to counts,
    the operator's calls (through the proxy executor) named."""
    with zipfile.ZipFile(path) as archive:
        sources = [name for name in archive.namelist() if name.endswith(".cpp") and "wrapper" in name]
        if not sources:
            sources = [name for name in archive.namelist() if name.endswith(".cpp")]
        text = "\n".join(archive.read(name).decode() for name in sources)
    run = text[text.find("::run_impl(") :] if "::run_impl(" in text else text
    calls = re.findall(r"(cpp_fused_\w+\(|aoti_torch_proxy_executor_call_function\(|aoti_torch_cpu_\w+\()", run)
    order, kernels = [], 0
    for call in calls:
        if call.startswith("aoti_torch_proxy_executor"):
            if kernels:
                order.append(f"{kernels} calls")
            order.append("exchange")
            kernels = 0
        else:
            kernels += 1
    if kernels:
        order.append(f"{kernels} calls")
    return order


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the compiled files")
    parser.add_argument("--benchmark-model", action="store_true", help="the benchmark model (default: a tiny one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="atoms of the frames compared and timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from nequip import _runtime
    from nequip.benchmark.systems import benchmark_model, machine_description
    from nequip.compile import compile_model

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    torch.set_num_threads(args.threads)
    _runtime.set_num_threads(args.threads)
    overrides = {} if args.benchmark_model else dict(num_layers=3, l_max=1, num_features=8, radial_mlp_width=16)
    model = benchmark_model(**overrides).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    report = dict(machine=machine_description(), threads=args.threads, model=overrides or "benchmark", sizes=[])

    _, trace_nodes = domain_frame(model, 64)
    _, export_nodes = domain_frame(model, 512 if args.benchmark_model else 64)
    one_graph = args.out / "one_graph.pt2"
    if not one_graph.exists():
        compile_one_graph(model, trace_nodes, export_nodes, one_graph, log)
    report["wrapper_call_order"] = wrapper_call_order(one_graph)
    log(f"generated wrapper, in order: {report['wrapper_call_order']}")
    domain = args.out / "domain.nequip.pt2"
    if not domain.exists():
        log("compiling the pair_nequip_domain file of the same weights")
        compile_model(model, domain, "aotinductor", target="pair_nequip_domain")
    compiled = torch._inductor.aoti_load_package(str(one_graph))
    runtime = _runtime.Model(str(domain))

    for size in args.sizes:
        frame, nodes = domain_frame(model, size)
        owner = nodes["owner"]
        expected = model(dict(frame))
        eager_exchange, file_exchange = OwnerExchange(owner), OwnerExchange(owner)
        inputs = (nodes["pos"], nodes["edge_index"], nodes["atom_types"], nodes["local_mask"])
        EXCHANGERS[1] = eager_exchange
        ExchangingModel(model)(*inputs, torch.tensor(1))
        EXCHANGERS[1] = file_exchange
        atomic_energy, forces = compiled(*inputs, torch.tensor(1))
        folded = torch.zeros_like(expected["forces"]).index_add(0, owner, forces)
        directions = [direction for direction, _ in file_exchange.calls]
        input_differences = [abs(a[1] - b[1]) / max(abs(b[1]), 1e-30) for a, b in zip(file_exchange.calls, eager_exchange.calls)]
        entry = dict(
            atoms=size,
            nodes=int(owner.shape[0]),
            edges=int(nodes["edge_index"].shape[1]),
            exchange_calls=directions,
            eager_exchange_calls=[direction for direction, _ in eager_exchange.calls],
            largest_relative_difference_of_exchange_inputs=max(input_differences, default=0.0),
            energy_difference=float((atomic_energy.sum() - expected["total_energy"].sum()).abs()),
            largest_force_difference=float((folded - expected["forces"]).abs().max()),
            largest_force=float(expected["forces"].abs().max()),
        )
        log(json.dumps(entry))

        cell = frame["cell"].numpy().reshape(3, 3)
        sides = {
            "one graph": lambda: compiled(*inputs, torch.tensor(1)),
            "parts": lambda: runtime.compute_exchanging(
                nodes["pos"].numpy(), nodes["atom_types"].numpy(), nodes["edge_index"].numpy(), owner.numpy(), cell=cell
            ),
            "whole": lambda: runtime.compute(
                frame["pos"].numpy(), frame["atom_types"].numpy(), frame["edge_index"].numpy(),
                frame["edge_cell_shift"].numpy(), cell,
            ),  # fmt: skip
        }
        for call in sides.values():
            call()  # warm-up
        times = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, call in sides.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        entry["seconds"] = {name: statistics.median(values) for name, values in times.items()}
        entry["rounds"] = times
        log(f"{size} atoms, medians: " + ", ".join(f"{k} {v:.3f} s" for k, v in entry["seconds"].items()))
        report["sizes"].append(entry)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
