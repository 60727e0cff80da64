"""Reproducer (open issue): TensorProductScatter, traced with its derivatives by make_fx and
compiled by AOTInductor exactly as nequip.compile does, gives wrong numbers on CPU (and the
whole lean model segfaults). Eager, TorchScript and make_fx-traced graphs are exact.

    .venv/bin/python benchmarks/repro_aoti_tensor_product_scatter.py   # prints N, E, max |AOTI - eager|
"""
import torch, sys, time
import torch.fx.experimental._config as fx_config
from torch.fx.experimental.proxy_tensor import make_fx
from nequip.benchmark import benchmark_model
from nequip.nn.tensor_product_scatter import TensorProductScatter
m = benchmark_model()
lean = TensorProductScatter(m.layers[1].interaction.tensor_product).float()
class F(torch.nn.Module):
    def __init__(s): super().__init__(); s.lean = lean
    def forward(s, x, sh, w, c, nb):
        x, sh, w = (t.detach().requires_grad_(True) for t in (x, sh, w))
        out = s.lean(x, sh, w, c, nb)
        return (out, *torch.autograd.grad([out.square().sum()], [x, sh, w]))
def inputs(N, E):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(N, lean.irreps_in1.dim, generator=g), torch.randn(E, 9, generator=g), torch.randn(E, lean.weight_numel, generator=g), torch.randint(0,N,(E,),generator=g), torch.randint(0,N,(E,),generator=g))
f = F()
with fx_config.patch(use_duck_shape=False, backed_size_oblivious=True):
    tr = make_fx(f, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs(5, 7))
N, E = torch.export.Dim("N", min=1), torch.export.Dim("E", min=0)
with fx_config.patch(backed_size_oblivious=True):
    ep = torch.export.export(tr, inputs(5,7), dynamic_shapes=({0:N},{0:E},{0:E},{0:E},{0:E}), strict=False)
path = torch._inductor.aoti_compile_and_package(ep, package_path="build/perf/repro_tp_lean.pt2")
mod = torch._inductor.aoti_load_package(path)
for n, e in ((5, 7), (6, 20), (3, 0), (512, 23548)):
    a = inputs(n, e)
    got = mod(list(a)); exp = f(*a)
    print(n, e, max(float((g-x).abs().max()) if g.numel() else 0 for g, x in zip(got, exp)), flush=True)
