"""SHA-256 of the graphs that compiled files are made from, to show that a change to the model's
code leaves them as they were (run before and after, compare the lines):

    .venv/bin/python benchmarks/dev/graph_hashes.py --json before.json
    ... change ...
    .venv/bin/python benchmarks/dev/graph_hashes.py --json after.json

Hashed, for the benchmark model (random weights, seeded): each AOTInductor target's traced graph
as ``torch.export`` receives it (``make_fx``, derivatives included, after the graph rewrites of
nequip.compile.aotinductor), every layer-by-layer part of ``pair_nequip_domain`` the same way
(each layer's forward and VJP after the min-cut split), and the TorchScript file's code (the
``code/`` entries of the archive ``torch.jit.save`` writes, which the C++ runtime reads) and its
forward as the interpreter runs it (every call inlined, constants folded, dead code removed: the
same for code that differs only in how it is split into functions or in branches TorchScript
skips).
Graphs are hashed by their generated Python code (``GraphModule.code``): node names, operations,
arguments and order. Nothing is compiled: tracing takes about a minute per target.
"""

import argparse
import contextlib
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path


def sha256(text) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


@contextlib.contextmanager
def capture_exports(graphs, prefix: str):
    """Record every module handed to ``torch.export.export`` (in order) instead of exporting it."""
    import torch

    original = torch.export.export

    def record(module, *args, **kwargs):
        graphs[f"{prefix}{len([k for k in graphs if k.startswith(prefix)])}"] = module.code
        return None

    torch.export.export = record
    try:
        yield
    finally:
        torch.export.export = original


def inlined_graph(scripted) -> str:
    """The scripted forward with every call inlined and constants folded (what the interpreter
    runs, whatever the code's functions and dead branches), without source locations."""
    import torch

    graph = scripted.inlined_graph
    torch._C._jit_pass_constant_propagation(graph)
    torch._C._jit_pass_dce(graph)
    return re.sub(r"\s*#.*", "", str(graph))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="*", default=["ase", "pair_nequip", "pair_nequip_domain"])
    parser.add_argument("--no-torchscript", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from nequip.benchmark.systems import benchmark_model
    from nequip.compile import aotinductor, torchscript

    model = benchmark_model()
    num_types = len(model.type_names)
    hashes = {}
    for target in args.targets:
        graphs = {}
        with capture_exports(graphs, f"{target}/model"):
            aotinductor.export(model, target, num_types, torch.device("cpu"), lambda message: None)
        if target == "pair_nequip_domain":
            with capture_exports(graphs, f"{target}/part"):
                aotinductor.export_parts(model, num_types, torch.device("cpu"), lambda message: None)
        hashes.update({name: sha256(code) for name, code in graphs.items()})
    if not args.no_torchscript:
        archive = io.BytesIO()
        torchscript.save(torchscript.script_model(model), archive, {})
        with zipfile.ZipFile(archive) as files:
            code = [name for name in sorted(files.namelist()) if "/code/" in name and not name.endswith(".debug_pkl")]
            hashes["torchscript/code"] = sha256(b"".join(name.encode() + files.read(name) for name in code))
        hashes["torchscript/inlined_graph"] = sha256(inlined_graph(torch.jit.load(io.BytesIO(archive.getvalue()))))
    for name, value in hashes.items():
        print(f"{value}  {name}")
    if args.json:
        args.json.write_text(json.dumps(hashes, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
