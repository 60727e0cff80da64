"""AOTInductor backend: forces and stress unrolled into one exported graph (FILE_CONTRACT §4).

The model computes forces and stress with ``torch.autograd.grad`` inside ``forward``.
``torch.export`` cannot capture a call into the autograd engine, but ``make_fx`` can: it
records the aten operations the engine runs, so the backward pass becomes ordinary forward
operations of the traced graph and the compiled file needs no autograd at run time. The
traced graph is then exported with dynamic atom and edge dimensions and compiled by
AOTInductor into a self-contained package.

    model --FlatModel--> flat tensors in/out --make_fx--> aten graph, derivatives included
      --sum_scatters_into_one_row--> --torch.export (N >= 1, E >= 0)--> ExportedProgram
      --aoti_compile_and_package--> *.nequip.pt2
"""

from typing import BinaryIO, Mapping, Optional, Tuple

import torch
import torch.fx.experimental._config as fx_config
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from nequip.data import keys, synthetic_frame

from .contract import TARGET_INPUTS, TARGET_OUTPUTS

# The graph is traced on the synthetic frame (8 atoms, about 150 edges: distinct sizes >= 2, as
# symbolic tracing specialises sizes 0 and 1), then exported on that frame repeated to these
# sizes. Inductor takes them as the typical sizes of the dynamic dimensions when it decides how
# to split loops across threads (with tiny sizes it would parallelise over channels instead of
# edges: 1.5x slower at 512 atoms) and which kernels share enough reads to fuse.
_EXPORT_NUM_ATOMS = 512
_EXPORT_NUM_EDGES = 24576

# Inductor settings for the force graph, whose memory is per-edge data of the backward pass
# (512 atoms of the benchmark model: peak resident memory 721 -> 359 MiB, 0.69 -> 1.15 s per call;
# docs/benchmarks.md).
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
    # fragmentation of the heap added half the live size again.
    "memory_planning": True,
}


class FlatModel(torch.nn.Module):
    """The model behind the flat tensor interface of one compile target.

    Inputs are TARGET_INPUTS[target] in order; outputs are TARGET_OUTPUTS[target] in order.
    """

    def __init__(self, model: torch.nn.Module, target: str):
        super().__init__()
        self.model = model
        self.inputs = TARGET_INPUTS[target]
        self.outputs = TARGET_OUTPUTS[target]

    def forward(self, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.inputs, tensors)))
        return tuple(out[name] for name in self.outputs)


def tracing_inputs(
    target: str, num_types: int, device: torch.device, num_atoms: Optional[int] = None, num_edges: Optional[int] = None
) -> Tuple[torch.Tensor, ...]:
    """The synthetic frame (:func:`nequip.data.synthetic_frame`) in TARGET_INPUTS[target] order,
    its atoms and edges repeated in turn up to ``num_atoms`` and ``num_edges`` when given.

    Only its sizes, dtypes and device matter: the graph has no data-dependent control flow,
    which is also why the frame is that of ``r_max = 1`` whatever the model's cutoff, and why
    a frame of our own keeps export independent of the sizes of the example data (which may
    well be a single atom). ``local_mask`` (a target with ghost atoms) marks every third atom
    a ghost.
    """
    frame = synthetic_frame([f"type{t}" for t in range(num_types)], r_max=1.0)
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


def export(
    model: torch.nn.Module, target: str, num_types: int, device: torch.device, log
) -> torch.export.ExportedProgram:
    """Trace ``model`` (forces and stress included) and export it with dynamic N and E."""
    flat = FlatModel(model, target).eval()
    inputs = tracing_inputs(target, num_types, device)

    log("tracing the model, derivatives included (make_fx)")
    # Never merge two dimensions because their example sizes happen to agree.
    # The message passing traces its per-edge contractions as broadcast products and sums, which
    # inductor fuses with the gathers and scatters around them (nequip.nn.message_passing).
    with fx_config.patch(use_duck_shape=False):
        traced = make_fx(
            flat,
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
            _error_on_data_dependent_ops=True,
        )(*inputs)
    sum_scatters_into_one_row(traced)

    log("exporting the traced graph (torch.export)")
    num_atoms = torch.export.Dim("num_atoms", min=1)
    num_edges = torch.export.Dim("num_edges", min=0)
    dynamic_shapes = {
        keys.POS: {0: num_atoms},
        keys.EDGE_INDEX: {1: num_edges},
        keys.ATOM_TYPES: {0: num_atoms},
        keys.CELL: None,  # one frame: static
        keys.EDGE_CELL_SHIFT: {0: num_edges},
        keys.LOCAL_MASK: {0: num_atoms},
    }
    # Traced on N, E >= 2, exported for N >= 1, E >= 0: export refuses (naming the guard)
    # if the graph specialised on N >= 2 or E >= 1 anywhere.
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
                and statically_known_true(values.shape[0] == index.shape[0])
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


def package(exported: torch.export.ExportedProgram, file: BinaryIO, metadata: Mapping[str, str]) -> None:
    """Compile ``exported`` to C++ and write the AOTInductor package (a ``*.pt2``) into ``file``."""
    torch._inductor.aoti_compile_and_package(
        exported,
        package_path=file,
        inductor_configs={**INDUCTOR_CONFIGS, "aot_inductor.metadata": dict(metadata)},
    )
