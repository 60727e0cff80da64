"""AOTInductor backend: forces and stress unrolled into one exported graph (FILE_CONTRACT §4).

The model computes forces and stress with ``torch.autograd.grad`` inside ``forward``.
``torch.export`` cannot capture a call into the autograd engine, but ``make_fx`` can: it
records the aten operations the engine runs, so the backward pass becomes ordinary forward
operations of the traced graph and the compiled file needs no autograd at run time. The
traced graph is then exported with dynamic atom and edge dimensions and compiled by
AOTInductor into a self-contained package.

    model --FlatModel--> flat tensors in/out --make_fx--> aten graph, derivatives included
      --sum_scatters_into_one_row--> --torch.export (N >= 1, E >= 0)--> ExportedProgram
      --aoti_compile_and_package (inductor_speedups.faster_compile)--> *.nequip.pt2
"""

import contextlib
import math
import operator
from typing import BinaryIO, Dict, List, Mapping, Optional, Tuple

import torch

from nequip.data import keys, synthetic_frame
from nequip.nn.message_passing import CPU_KERNELS, INDUCTOR, message_backend, register_kernel_shapes
from nequip.utils import torch_internals

from .compile_workers import compile_programs
from .contract import BATCH_TARGET, TARGET_INPUTS, TARGET_OUTPUTS
from .inductor_speedups import faster_compile

# The graph is traced on the synthetic frame (8 atoms, about 150 edges: distinct sizes >= 2, as
# symbolic tracing specialises sizes 0 and 1), then exported on that frame repeated to these
# sizes. Inductor takes them as the typical sizes of the dynamic dimensions when it decides how
# to split loops across threads (with tiny sizes it would parallelise over channels instead of
# edges, which is slower) and which kernels share enough reads to fuse.
_EXPORT_NUM_ATOMS = 512
_EXPORT_NUM_EDGES = 24576

# Inductor settings for the force graph, whose memory is per-edge data of the backward pass: they
# give up some time per call for a much smaller peak memory (figures: docs/benchmarks.md, "Where
# the numbers in code comments went").
INDUCTOR_CONFIGS = {
    # The locality pass moves every producer to just before its first consumer. Each layer's
    # gradient with respect to the shared edge embeddings is first consumed where it is added to
    # the next layer's, so whole layers' radial-weight gradients (and the per-edge data they
    # read) would sink to the end of the graph and stay alive through every other layer.
    "reorder_for_locality": False,
    # Fuse unrelated kernels only if they share 16 MiB of reads (sized at the export example):
    # otherwise the twin path groups of even and odd inputs, which read the same node
    # gradients, run as one kernel with both groups' per-edge buffers alive.
    "score_fusion_memory_threshold": 2**24,
    # One buffer per call, laid out ahead of time, instead of hundreds of malloc'd ones whose
    # fragmentation of the heap added to the live size.
    "memory_planning": True,
    # The wrapper (the code that calls the kernels and lays out their buffers, not the kernels)
    # unoptimised: g++ -O1 spent most of the benchmark model's compile time on it, and what it
    # runs is a few thousand calls per model call.
    "aot_inductor.compile_wrapper_opt_level": "O0",
}


class FlatModel(torch.nn.Module):
    """The model behind the flat tensor interface of one compile target.

    Inputs are TARGET_INPUTS[target] in order; outputs are ``outputs`` (default
    TARGET_OUTPUTS[target]) in order.
    """

    def __init__(self, model: torch.nn.Module, target: str, outputs: Optional[Tuple[str, ...]] = None):
        super().__init__()
        self.model = model
        self.inputs = TARGET_INPUTS[target]
        self.outputs = TARGET_OUTPUTS[target] if outputs is None else outputs

    def forward(self, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.inputs, tensors)))
        return tuple(out[name] for name in self.outputs)


def tracing_inputs(
    target: str,
    num_types: int,
    device: torch.device,
    num_atoms: Optional[int] = None,
    num_edges: Optional[int] = None,
) -> Tuple[torch.Tensor, ...]:
    """The synthetic frame (:func:`nequip.data.synthetic_frame`) in TARGET_INPUTS[target] order,
    its atoms and edges repeated in turn up to ``num_atoms`` and ``num_edges`` when given.

    Only its sizes, dtypes and device matter: the graph has no data-dependent control flow,
    which is also why the frame is that of ``r_max = 1`` whatever the model's cutoff, and why
    a frame of our own keeps export independent of the sizes of the example data (which may
    well be a single atom). ``local_mask`` (a target with ghost atoms) marks every third atom
    a ghost. The batch target gets copies of the frame as a batch instead: two (frames, like
    atoms and edges, are traced at a size >= 2), or ``num_atoms / 8`` sharing ``num_edges``.
    """
    frame = synthetic_frame([f"type{t}" for t in range(num_types)], r_max=1.0)
    if target == BATCH_TARGET:
        return _batch_tracing_inputs(frame, device, num_atoms, num_edges)
    atoms = torch.arange(frame[keys.POS].shape[0] if num_atoms is None else num_atoms)
    edges = torch.arange(frame[keys.EDGE_INDEX].shape[1] if num_edges is None else num_edges)
    atoms, edges = atoms % frame[keys.POS].shape[0], edges % frame[keys.EDGE_INDEX].shape[1]
    inputs = {
        keys.POS: frame[keys.POS][atoms],
        keys.EDGE_INDEX: frame[keys.EDGE_INDEX][:, edges],
        keys.ATOM_TYPES: frame[keys.ATOM_TYPES][atoms],
        keys.CELL: frame[keys.CELL],
        keys.EDGE_CELL_SHIFT: frame[keys.EDGE_CELL_SHIFT][edges],
        keys.LOCAL_MASK: torch.arange(atoms.shape[0]) % 3 != 0,
    }
    return tuple(inputs[name].contiguous().to(device) for name in TARGET_INPUTS[target])


def _batch_tracing_inputs(
    frame: Dict[str, torch.Tensor], device: torch.device, num_atoms: Optional[int], num_edges: Optional[int]
) -> Tuple[torch.Tensor, ...]:
    """Copies of ``frame`` as one batch (TARGET_INPUTS of the batch target): two copies, or
    ``num_atoms // frame_atoms`` copies whose edges (the frame's, in turn) add up to ``num_edges``."""
    frame_atoms, frame_edges = frame[keys.POS].shape[0], frame[keys.EDGE_INDEX].shape[1]
    num_frames = 2 if num_atoms is None else max(2, num_atoms // frame_atoms)
    edges_per_frame = frame_edges if num_edges is None else max(1, num_edges // num_frames)
    edges = torch.arange(edges_per_frame) % frame_edges
    first_atom = (torch.arange(num_frames) * frame_atoms).repeat_interleave(edges_per_frame)
    inputs = {
        keys.POS: frame[keys.POS].repeat(num_frames, 1),
        keys.EDGE_INDEX: frame[keys.EDGE_INDEX][:, edges].repeat(1, num_frames) + first_atom,
        keys.ATOM_TYPES: frame[keys.ATOM_TYPES].repeat(num_frames),
        keys.CELL: frame[keys.CELL].view(1, 3, 3).repeat(num_frames, 1, 1),
        keys.EDGE_CELL_SHIFT: frame[keys.EDGE_CELL_SHIFT][edges].repeat(num_frames, 1),
        keys.BATCH: torch.arange(num_frames).repeat_interleave(frame_atoms),
        keys.NUM_ATOMS: torch.full((num_frames,), frame_atoms, dtype=torch.int64),
    }
    return tuple(inputs[name].contiguous().to(device) for name in TARGET_INPUTS[BATCH_TARGET])


def export(
    model: torch.nn.Module,
    target: str,
    num_types: int,
    device: torch.device,
    log,
    outputs: Optional[Tuple[str, ...]] = None,
) -> torch.export.ExportedProgram:
    """Trace ``model`` (forces and stress included) and export it with dynamic N and E; its
    outputs are ``outputs`` (default: the target's, TARGET_OUTPUTS)."""
    flat = FlatModel(model, target, outputs).eval()
    inputs = tracing_inputs(target, num_types, device)

    log("tracing the model, derivatives included (make_fx)")
    traced = _trace(flat, inputs)
    sum_scatters_into_one_row(traced)
    materialize_gathered(traced)

    log("exporting the traced graph (torch.export)")
    num_atoms = torch.export.Dim("num_atoms", min=1)
    num_edges = torch.export.Dim("num_edges", min=0)
    num_frames = torch.export.Dim("num_frames", min=1)
    dynamic_shapes = {
        keys.POS: {0: num_atoms},
        keys.EDGE_INDEX: {1: num_edges},
        keys.ATOM_TYPES: {0: num_atoms},
        # one frame: static; a batch: one cell per frame
        keys.CELL: {0: num_frames} if target == BATCH_TARGET else None,
        keys.EDGE_CELL_SHIFT: {0: num_edges},
        keys.LOCAL_MASK: {0: num_atoms},
        keys.BATCH: {0: num_atoms},
        keys.NUM_ATOMS: {0: num_frames},
    }
    # Traced on N, E (and F) >= 2, exported for N, F >= 1, E >= 0: export refuses (naming the
    # guard) if the graph specialised on N >= 2, F >= 2 or E >= 1 anywhere.
    return torch.export.export(
        traced,
        tracing_inputs(target, num_types, device, _EXPORT_NUM_ATOMS, _EXPORT_NUM_EDGES),
        dynamic_shapes=tuple(dynamic_shapes[name] for name in TARGET_INPUTS[target]),
        strict=False,
    )


def sum_scatters_into_one_row(graph_module: torch.fx.GraphModule) -> int:
    """Rewrite scatter-adds into a destination with a single row as plain sums; return how many.

    torch 2.13's inductor cannot generate vectorised CPU code for an atomic-add scatter whose
    destination has size 1 along the scattered dimension (``assert isinstance(index,
    CppCSEVariable) and index.is_vec`` in codegen/cpp.py: the index is simplified to the
    constant 0). A single-frame model has three: the total energy summed over atoms by frame
    index, and two strain gradients gathered back from atoms and edges to the frame's cell.
    With a single row every valid index is 0, so the rewrite is exact:
    ``dest.index_add(dim, index, src, alpha) == dest + alpha * src.sum(dim, keepdim=True)`` and
    ``dest.index_put([index], values, accumulate=True) == dest + values.sum(0, keepdim=True)``.
    """
    aten = torch.ops.aten
    graph = graph_module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is aten.index_add.default:
            destination, dim, _, source = node.args[:4]
            alpha = node.args[4] if len(node.args) > 4 else node.kwargs.get("alpha", 1)
        elif node.target is aten.index_put.default:
            destination, indices, source = node.args[:3]
            accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
            dim, alpha = 0, 1
            if not accumulate or len(indices) != 1 or indices[0] is None:
                continue
            index, values = indices[0].meta["val"], source.meta["val"]
            # one value per index (no broadcasting of the values over the indices)
            if not (
                index.dim() == 1
                and values.dim() == destination.meta["val"].dim()
                and torch_internals.statically_known_true(values.shape[0] == index.shape[0])
            ):
                continue
        else:
            continue
        size = destination.meta["val"].shape[dim]
        if not (isinstance(size, int) and size == 1):
            continue
        with graph.inserting_before(node):
            summed = graph.call_function(aten.sum.dim_IntList, (source, [dim], True))
            replacement = graph.call_function(aten.add.Tensor, (destination, summed), {"alpha": alpha})
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        rewritten += 1
    graph.lint()
    graph_module.recompile()
    return rewritten


def materialize_gathered(graph_module: torch.fx.GraphModule) -> int:
    """Make every tensor gathered onto edges (``index_select``) a contiguous buffer of its own;
    return how many were not one already (inputs and matmul outputs are).

    The message passing gathers node features in channels-last layout (a transposed copy, or a
    stack of transposed gradient blocks: a few numbers per node). Inductor would inline that
    copy into the per-edge kernel that gathers, whose loads then step through memory with the
    irrep's stride instead of reading 32 contiguous channels, in every per-edge kernel of every
    layer, forward and backward (several times the time in generated kernels: docs/benchmarks.md,
    "Where the numbers in code comments went"). ``inductor_force_stride_order`` makes Inductor
    write the copy once, per node.
    """
    aten = torch.ops.aten
    force_stride_order = torch_internals.force_stride_order()
    buffers_already = (force_stride_order, aten.mm.default, aten.addmm.default, aten.bmm.default)
    graph = graph_module.graph
    buffers = {}  # source -> its contiguous buffer
    for node in list(graph.find_nodes(op="call_function", target=aten.index_select.default)):
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_function" or source.target in buffers_already:
            continue
        shape = source.meta["val"].shape
        if not all(isinstance(size, int) for size in shape[1:]):
            continue
        if source not in buffers:
            strides = [math.prod(shape[dim + 1 :]) for dim in range(len(shape))]
            with graph.inserting_after(source):
                buffers[source] = graph.call_function(force_stride_order, (source, strides))
            buffers[source].meta["val"] = source.meta["val"].contiguous()
        node.replace_input_with(source, buffers[source])
    graph.lint()
    graph_module.recompile()
    return len(buffers)


def package(exported: torch.export.ExportedProgram, file: BinaryIO, metadata: Mapping[str, str]) -> None:
    """Compile ``exported`` to C++ and write the AOTInductor package (a ``*.pt2``) into ``file``."""
    with faster_compile():
        torch_internals.aoti_compile_and_package(
            exported, file, {**INDUCTOR_CONFIGS, "aot_inductor.metadata": dict(metadata)}
        )


# -- the layer-by-layer parts (target pair_nequip_domain) -----------------------------------
#
# LAMMPS on several MPI ranks evaluates the model one layer at a time and exchanges the ghost
# atoms' node features between layers (Model::compute_exchanging in the C++ runtime). A package
# of that target holds, beside the whole model ("model", what one rank runs), the parts below,
# each its own AOTI model: forward parts to go forward, vector-Jacobian products (VJPs) to come
# back. Each layer is traced once with its VJP (a joint graph) and split in two by AOTAutograd's
# min-cut partitioner (split_joint): the forward part returns its output and the values costly
# to recompute ("residuals": per edge, the radial MLP's hidden activations), which the runtime
# keeps until the VJP takes them back; the VJP recomputes the cheap rest. The edge embedding's
# VJP recomputes the embedding (cheap: harmonics and Bessels). A model with a pair potential
# (metadata key pair_potential: ZBL) has one more part, last, which gives the pair energies and
# their gradient by the edge vectors, which the runtime adds to the rest: the pair term is in
# that part only. The package's models are compiled side by side, in this process and helper
# processes (compile_workers).


def part_names(num_layers: int, pair_potential: bool = False) -> Tuple[str, ...]:
    """The AOTI model names of the parts, in the order of one evaluation."""
    return (
        ("node_embedding", "edge_embedding")
        + tuple(f"layer_{k}" for k in range(num_layers))
        + ("energy_readout_vjp",)
        + tuple(f"layer_{k}_vjp" for k in reversed(range(num_layers)))
        + ("edge_embedding_vjp",)
        + (("pair_energy_vjp",) if pair_potential else ())
    )


def domain_models(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module, bool]]:
    """(prefix of its part names, model, whether it has a pair potential) of each model whose
    parts a package of target pair_nequip_domain holds: the model itself (no prefix), or each
    member of a committee (nequip.model.Committee), "member<k>_", evaluated one after the other
    layer by layer (the runtime's Model::compute_exchanging)."""
    from nequip.model.committee import Committee

    models = list(model.members) if isinstance(model, Committee) else [model]
    prefixes = [f"member{k}_" for k in range(len(models))] if isinstance(model, Committee) else [""]
    return [(prefix, each, "pair_potential" in each.metadata()) for prefix, each in zip(prefixes, models)]


def domain_part_names(model: torch.nn.Module) -> Tuple[str, ...]:
    """The names of every part of a package of target pair_nequip_domain (domain_models)."""
    return tuple(
        prefix + name
        for prefix, each, pair_potential in domain_models(model)
        for name in part_names(len(each.layers), pair_potential)
    )


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().requires_grad_(True)


def _vjp(outputs, inputs, grad_outputs):
    """Gradients of ``outputs`` by ``inputs`` (zeros where they do not depend on one)."""
    grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))


class NodeEmbedding(torch.nn.Module):
    """atom_types (N,) -> node_attrs, features (N + num_types rows: the reference atoms last)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, atom_types):
        node_attrs = self.model.node_attributes(atom_types)
        return node_attrs, self.model.node_embedding(node_attrs)


class EdgeEmbedding(torch.nn.Module):
    """edge_vec (E, 3) float64, atom_types, edge_index -> edge_sh, edge_radial."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, edge_vec, atom_types, edge_index):
        return self.model.edge_embedding(edge_vec, atom_types, edge_index)


class EdgeEmbeddingVJP(torch.nn.Module):
    """... grad_sh, grad_radial -> the gradient by the edge vectors (E, 3) float64."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, edge_vec, atom_types, edge_index, grad_sh, grad_radial):
        with torch.enable_grad():
            edge_vec = _leaf(edge_vec)
            edge_sh, edge_radial = self.model.edge_embedding(edge_vec, atom_types, edge_index)
            return _vjp([edge_sh, edge_radial], [edge_vec], [grad_sh, grad_radial])


class LayerJoint(torch.nn.Module):
    """Layer ``index`` and its VJP in one graph: x, node_attrs, edge_sh, edge_radial,
    edge_index, rows, grad_out -> its output features of the nodes ``rows`` (the local nodes and
    the reference atoms: a ghost's come from its owner), then the gradients by edge_sh and
    edge_radial, and by x (not for the first layer, whose input is a function of the types)."""

    def __init__(self, model, index: int):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x, node_attrs, edge_sh, edge_radial, edge_index, rows, grad_out):
        with torch.enable_grad():
            edge_sh, edge_radial = _leaf(edge_sh), _leaf(edge_radial)
            inputs = [edge_sh, edge_radial]
            if self.index > 0:
                x = _leaf(x)
                inputs.append(x)
            out = self.model.layer(self.index, x, node_attrs, edge_sh, edge_radial, edge_index, rows)
            grads = _vjp([out], inputs, [grad_out])
        return (out.detach(),) + grads


def layer_joint_graph(model, index: int, inputs) -> torch.fx.GraphModule:
    """:class:`LayerJoint` traced to aten operations without in-place ones (what reads a value
    is then all that orders it), its views kept as views (Inductor lowers them to indexing;
    their ``_copy`` forms would be copies, some of them run outside the compiled code)."""
    joint = _trace(LayerJoint(model, index).eval(), inputs)
    return _trace(torch.func.functionalize(joint, remove="mutations"), inputs)


def _linear_in_one_symbol(expr):
    """(symbol, scale, offset) of a symbolic size ``scale * symbol + offset``."""
    if len(expr.free_symbols) == 1:
        (symbol,) = expr.free_symbols
        scale, offset = expr.coeff(symbol), expr.subs(symbol, 0)
        if expr == scale * symbol + offset:
            return symbol, int(scale), int(offset)
    raise NotImplementedError(f"the size {expr} is not linear in one of the graph's input sizes")


def split_joint(joint: torch.fx.GraphModule) -> Tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """The forward and backward graphs of a functional joint graph whose last input is the
    gradient by its first output (the tangent) and whose other outputs are gradients.

    ``forward(*primals) -> (out, *residuals)`` and ``backward(*primals, out, *residuals,
    tangent) -> gradients`` (``joint``'s inputs are renamed on the way). What to keep is
    AOTAutograd's min-cut choice: the outputs of matmuls and other costly values are kept, what
    is cheap to recompute from them (products, broadcasts, views) is recomputed in the backward
    graph, where Inductor fuses it into the kernels that read it: per edge, only the radial MLP's
    hidden values are kept (docs/benchmarks.md, "Where the numbers in code comments went").
    """
    placeholders = list(joint.graph.find_nodes(op="placeholder"))
    primals = placeholders[:-1]
    # aggressive: the gathers of node features onto edges (index_select) are recomputed too;
    # the joint's inputs are renamed, the names the partitioned backward's inputs carry
    forward, partitioned_backward = torch_internals.min_cut_partition(joint)

    # The partitioner's forward also returns the symbolic sizes its backward reads; an AOTI
    # model returns tensors only, so the backward recomputes them from its inputs' sizes.
    (forward_output,) = forward.graph.find_nodes(op="output")
    out, *kept = forward_output.args[0]
    kept_tensors = [node for node in kept if isinstance(node.meta.get("val"), torch.Tensor)]
    # views of the inputs (detached harmonics, the edge index's rows) are taken again from them
    views = [node for node in kept_tensors if node.op != "placeholder" and _view_of_input(node)]
    residuals = [node for node in kept_tensors if node.op != "placeholder" and node is not out and node not in views]
    forward_output.args = ((out, *residuals),)
    forward.graph.eliminate_dead_code()
    forward.recompile()

    graph, env = torch.fx.Graph(), {}
    new_primals = []
    for node in primals:
        new_primals.append(graph.placeholder(node.name))
        new_primals[-1].meta = dict(node.meta)
    by_name = {node.name: new for node, new in zip(primals, new_primals)}
    by_name[out.name] = graph.placeholder("out")
    by_name[out.name].meta = dict(out.meta)
    for index, node in enumerate(residuals):
        by_name[node.name] = graph.placeholder(f"residual_{index}")
        by_name[node.name].meta = dict(node.meta)
    tangent = graph.placeholder("tangents_1")
    by_name[placeholders[-1].name] = tangent
    tangent.meta = dict(placeholders[-1].meta)

    def copy_view(node):
        if node.op == "placeholder":
            return by_name[node.name]
        return graph.node_copy(node, copy_view)

    for node in views:
        by_name[node.name] = copy_view(node)
    sizes = {}  # symbol -> a node of that size, read from the primals
    for node, new in zip(primals, new_primals):
        for dim, size in enumerate(node.meta["val"].shape):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                sizes.setdefault(size.node.expr, (new, dim))

    def size_node(expr):
        """A node computing ``expr`` from the primals' sizes."""
        symbol, scale, offset = _linear_in_one_symbol(expr)
        if symbol not in sizes:
            raise NotImplementedError(f"a size of the backward graph, {expr}, is not one of its inputs' sizes")
        value = graph.call_function(torch.ops.aten.sym_size.int, sizes[symbol])
        if scale != 1:
            value = graph.call_function(operator.mul, (value, scale))
        if offset != 0:
            value = graph.call_function(operator.add, (value, offset))
        return value

    for node in partitioned_backward.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            env[node] = by_name[node.name] if isinstance(value, torch.Tensor) else size_node(value.node.expr)
        elif node.op == "output":
            graph.output(torch.fx.map_arg(node.args[0], lambda arg: env[arg]))
        else:
            env[node] = graph.node_copy(node, lambda arg: env[arg])
    backward = torch.fx.GraphModule(partitioned_backward, graph)
    backward.graph.eliminate_dead_code()
    backward.recompile()
    return forward, backward


def _view_of_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a chain of views (with constant arguments) of a graph input."""
    while node.op == "call_function" and getattr(node.target, "is_view", False):
        if any(isinstance(arg, torch.fx.Node) for arg in node.args[1:]) or node.kwargs:
            return False
        node = node.args[0]
    return node.op == "placeholder"


class EnergyReadoutVJP(torch.nn.Module):
    """x (N + num_types rows), atom_types, local_mask -> atomic energies (N, 1), 0 where not
    local, and the gradient of their sum by x."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, atom_types, local_mask):
        with torch.enable_grad():
            x = _leaf(x)
            atomic_energy = self.model.energy_readout(x, atom_types)
            atomic_energy = torch.where(local_mask.unsqueeze(-1), atomic_energy, torch.zeros_like(atomic_energy))
            (grad,) = _vjp([atomic_energy.sum()], [x], None)
            return atomic_energy.detach(), grad


class PairEnergyVJP(torch.nn.Module):
    """edge_vec (E, 3), atom_types, edge_index, local_mask -> the per-atom pair energies
    (N, 1), 0 where not local, and the gradient of their sum by edge_vec."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, edge_vec, atom_types, edge_index, local_mask):
        with torch.enable_grad():
            edge_vec = _leaf(edge_vec)
            energy = self.model.pair_energy(edge_vec, atom_types, edge_index)
            energy = torch.where(local_mask.unsqueeze(-1), energy, torch.zeros_like(energy))
            (grad,) = _vjp([energy.sum()], [edge_vec], None)
            return energy.detach(), grad


def _part_inputs(model, num_types: int, device, num_atoms=None, num_edges=None):
    """Example inputs of every part (name -> tuple), from the synthetic frame as tracing_inputs
    makes it, with the intermediate tensors the model gives on it."""
    pos, edge_index, atom_types, cell, shift, local_mask = tracing_inputs(
        "pair_nequip_domain", num_types, device, num_atoms, num_edges
    )
    batch = torch.zeros(pos.shape[0], dtype=torch.long, device=device)
    with torch.no_grad():
        edge_vec = model.edge_vectors(pos, cell.view(-1, 3, 3), edge_index, shift, batch)
        edge_sh, edge_radial = model.edge_embedding(edge_vec, atom_types, edge_index)
        node_attrs = model.node_attributes(atom_types)
        features = [model.node_embedding(node_attrs)]
        for k in range(len(model.layers)):
            features.append(model.layer(k, features[-1], node_attrs, edge_sh, edge_radial, edge_index))
    inputs = {
        "node_embedding": (atom_types,),
        "edge_embedding": (edge_vec, atom_types, edge_index),
        "edge_embedding_vjp": (edge_vec, atom_types, edge_index, torch.ones_like(edge_sh), torch.ones_like(edge_radial)),
        "energy_readout_vjp": (features[-1], atom_types, local_mask),
        "pair_energy_vjp": (edge_vec, atom_types, edge_index, local_mask),
    }
    # the rows a layer computes: the local nodes, then the reference atoms
    rows = torch.cat([local_mask.nonzero().flatten(), torch.arange(pos.shape[0], node_attrs.shape[0], device=device)])
    for k in range(len(model.layers)):
        common = (features[k], node_attrs, edge_sh, edge_radial, edge_index, rows)
        inputs[f"layer_{k}"] = common
        inputs[f"layer_{k}_vjp"] = common + (features[k + 1].new_ones(rows.shape[0], features[k + 1].shape[1]),)
    return inputs


def _part_module(model, name: str) -> torch.nn.Module:
    return {"node_embedding": NodeEmbedding, "edge_embedding": EdgeEmbedding,
            "edge_embedding_vjp": EdgeEmbeddingVJP, "energy_readout_vjp": EnergyReadoutVJP,
            "pair_energy_vjp": PairEnergyVJP}[name](model)  # fmt: skip


def _part_dynamic_shapes(name: str, num_types: int):
    atoms = torch.export.Dim("num_atoms", min=1)
    edges = torch.export.Dim("num_edges", min=0)
    rows = torch.export.Dim("num_rows", min=1)
    out_rows = torch.export.Dim("num_out_rows", min=1)
    edge_inputs = ({0: edges}, {0: atoms}, {1: edges})
    if name == "node_embedding":
        return ({0: atoms},)
    if name == "edge_embedding":
        return edge_inputs
    if name == "edge_embedding_vjp":
        return edge_inputs + ({0: edges}, {0: edges})
    if name == "energy_readout_vjp":
        return ({0: atoms + num_types}, {0: atoms}, {0: atoms})
    if name == "pair_energy_vjp":
        return edge_inputs + ({0: atoms},)
    return ({0: rows}, {0: rows}, {0: edges}, {0: edges}, {1: edges}, {0: out_rows})  # a layer's forward part


# How the message passing is traced (nequip.nn.message_passing): by the ``inductor`` backend, a
# portable file (torch operations only, which Inductor fuses), or by ``cpu_kernels``, whose node
# sums and their backward are the runtime library's kernels (nequip::message_forward_v1 and
# nequip::message_backward_v1), called by the compiled file. Set by traced_message_backend.
_traced_backend = INDUCTOR


@contextlib.contextmanager
def traced_message_backend(name: str):
    """Trace the message passing by backend ``name`` (``inductor`` or ``cpu_kernels``) inside the context."""
    global _traced_backend
    if name not in (INDUCTOR, CPU_KERNELS):
        raise ValueError(f"graphs are traced by the {INDUCTOR!r} or {CPU_KERNELS!r} backend, not {name!r}")
    if name == CPU_KERNELS:
        register_kernel_shapes()
    previous, _traced_backend = _traced_backend, name
    try:
        yield
    finally:
        _traced_backend = previous


def _trace(module, inputs) -> torch.fx.GraphModule:
    """``module`` (or a function) traced to aten operations, derivatives included, with symbolic sizes.

    The message passing computes by the backend :func:`traced_message_backend` chose: by default
    ``inductor``, per-edge contractions as broadcast products and sums, which Inductor fuses with
    the gathers and scatters around them (nequip.nn.message_passing)."""
    backend = (
        message_backend(module, _traced_backend) if isinstance(module, torch.nn.Module) else contextlib.nullcontext()
    )
    with backend:
        return torch_internals.trace_symbolic(module, inputs)


def operators_called(programs) -> List[str]:
    """The operators of NequIP's kernel library (namespace ``nequip``) that ``programs`` (exported
    programs) call, sorted: what a runtime must provide to run the file (metadata
    ``nequip_operators``)."""
    names = set()
    for program in programs:
        for node in program.graph_module.graph.nodes:
            target = node.target
            if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and target.namespace == "nequip":
                names.add(node.target._schema.name)
    return sorted(names)


def _residual_dynamic_shapes(residuals, dims_by_symbol):
    """Each residual's dynamic sizes, from its symbolic sizes in the joint graph: the number
    of rows or edges (``dims_by_symbol``: symbol -> export Dim), a multiple of either plus a
    constant, or static."""
    specs = []
    for node in residuals:
        spec = {}
        for dim, size in enumerate(node.meta["val"].shape):
            if isinstance(size, int) or size.node.expr.is_number:
                continue
            symbol, scale, offset = _linear_in_one_symbol(size.node.expr)
            if symbol not in dims_by_symbol:
                raise NotImplementedError(f"residual size {size.node.expr} is not one of the rows or the edges")
            base = dims_by_symbol[symbol]
            spec[dim] = base if (scale, offset) == (1, 0) else scale * base + offset
        specs.append(spec or None)
    return tuple(specs)


def export_domain_parts(
    model: torch.nn.Module, num_types: int, device: torch.device, log
) -> Dict[str, torch.export.ExportedProgram]:
    """Every part of :func:`domain_part_names` (one model's, or each committee member's)."""
    exported = {}
    for prefix, each, pair_potential in domain_models(model):
        for name, program in export_parts(each, num_types, device, log, pair_potential, prefix).items():
            exported[prefix + name] = program
    return exported


def _name_constants(graph_module: torch.fx.GraphModule, prefix: str) -> None:
    """The traced module's weights (``_param_constant0`` ..., the same names in every model
    traced) renamed ``prefix`` + name: the models of one package share one namespace of
    weights, in which a committee's members must not take one another's."""
    if not prefix:
        return
    renamed: Dict[str, str] = {}  # several nodes may read one weight
    for node in graph_module.graph.find_nodes(op="get_attr"):
        if node.target not in renamed:
            value = getattr(graph_module, node.target)
            delattr(graph_module, node.target)
            renamed[node.target] = prefix + node.target
            setattr(graph_module, renamed[node.target], value)
        node.target = renamed[node.target]
    graph_module.recompile()


def export_parts(
    model: torch.nn.Module,
    num_types: int,
    device: torch.device,
    log,
    pair_potential: bool = False,
    weight_prefix: str = "",
) -> Dict[str, torch.export.ExportedProgram]:
    """Every part of :func:`part_names`, traced (VJPs included) and exported with dynamic sizes,
    the weights' names prefixed with ``weight_prefix`` (a committee member's, _name_constants)."""
    trace_inputs = _part_inputs(model, num_types, device)
    export_inputs = _part_inputs(model, num_types, device, _EXPORT_NUM_ATOMS, _EXPORT_NUM_EDGES)
    exported = {}
    for name in part_names(len(model.layers), pair_potential):
        if name.startswith("layer_"):
            continue
        log(f"tracing and exporting part {name}")
        traced = _trace(_part_module(model, name).eval(), trace_inputs[name])
        sum_scatters_into_one_row(traced)
        materialize_gathered(traced)
        _name_constants(traced, weight_prefix)
        exported[name] = torch.export.export(
            traced, export_inputs[name], dynamic_shapes=_part_dynamic_shapes(name, num_types), strict=False
        )
    for index in range(len(model.layers)):
        name = f"layer_{index}"
        log(f"tracing, splitting and exporting {name} and its VJP")
        joint = layer_joint_graph(model, index, trace_inputs[f"{name}_vjp"])
        forward, backward = split_joint(joint)
        for graph_module in (forward, backward):
            sum_scatters_into_one_row(graph_module)
            materialize_gathered(graph_module)
            _name_constants(graph_module, weight_prefix)
        layer_shapes = _part_dynamic_shapes(name, num_types)
        exported[name] = torch.export.export(forward, export_inputs[name], dynamic_shapes=layer_shapes, strict=False)
        x, _, edge_sh, _, _, out_rows_input = list(joint.graph.find_nodes(op="placeholder"))[:6]
        rows, edges, out_rows = layer_shapes[0][0], layer_shapes[2][0], layer_shapes[5][0]
        dims_by_symbol = {x.meta["val"].shape[0].node.expr: rows, edge_sh.meta["val"].shape[0].node.expr: edges,
                          out_rows_input.meta["val"].shape[0].node.expr: out_rows}  # fmt: skip
        (forward_output,) = forward.graph.find_nodes(op="output")
        with torch.no_grad():
            out, *residuals = forward(*export_inputs[name])
        exported[f"{name}_vjp"] = torch.export.export(
            backward,
            tuple(export_inputs[name]) + (out, *residuals, export_inputs[f"{name}_vjp"][-1]),
            dynamic_shapes=layer_shapes
            + ({0: out_rows},)
            + _residual_dynamic_shapes(forward_output.args[0][1:], dims_by_symbol)
            + ({0: out_rows},),
            strict=False,
        )
    return exported


def package_with_parts(
    whole: torch.export.ExportedProgram,
    parts: Dict[str, torch.export.ExportedProgram],
    file: BinaryIO,
    metadata: Mapping[str, str],
    log,
) -> None:
    """One package: the whole model as "model" (with the metadata) and each part under its name."""
    options = {**INDUCTOR_CONFIGS, "aot_inductor.package": True, "aot_inductor.metadata": dict(metadata)}
    # the whole model first: the largest compile, begun while the others go to the helpers
    files = compile_programs({"model": whole, **parts}, options, log)
    torch_internals.aoti_package(file, files)
