"""Radial functions of the edge length: a Bessel basis and a smooth cutoff envelope."""

import math
from typing import List, Tuple

import torch
from e3nn.math import normalize2mom


class BesselBasis(torch.nn.Module):
    r"""Radial Bessel basis :math:`b_n(r) = \frac{2}{r_{max}} \frac{\sin(n \pi r / r_{max})}{r}`.

    Args:
        r_max: the radius at which the basis functions reach their last node.
        num_bessels: number of basis functions :math:`n = 1 \dots` ``num_bessels``.
        trainable: learn the frequencies :math:`n \pi` (initialised at those values).

    Shapes: ``r`` (E,) -> (E, num_bessels).
    """

    def __init__(self, r_max: float, num_bessels: int = 8, trainable: bool = True):
        super().__init__()
        self.r_max = float(r_max)
        self.prefactor = 2.0 / self.r_max
        frequencies = torch.arange(1, num_bessels + 1, dtype=torch.get_default_dtype()) * math.pi
        if trainable:
            self.frequencies = torch.nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r / self.r_max) / r


class PolynomialCutoff(torch.nn.Module):
    r"""Smooth envelope of ``x = r / r_cut`` that goes to zero at ``x = 1`` with ``p`` continuous derivatives.

    :math:`f(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}` for
    :math:`x < 1`, and 0 beyond (Klicpera et al., DimeNet, 2020).

    Shapes: ``x`` (E,) -> (E,).
    """

    def __init__(self, p: float = 6.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        envelope = (
            1.0
            - 0.5 * (p + 1.0) * (p + 2.0) * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1.0)
            - 0.5 * p * (p + 1.0) * torch.pow(x, p + 2.0)
        )
        return envelope * (x < 1.0)


class RadialMLP(torch.nn.Module):
    r"""The radial network: per-edge radial embedding -> per-edge tensor-product weights.

    Hidden layers :math:`h \leftarrow \phi(h W_k / \sqrt{n_{in}})`, output :math:`h W / \sqrt{n_{in}}`,
    no biases, with :math:`\phi` the SiLU scaled to unit second moment under a unit Gaussian: the
    function and initialisation of e3nn's ``FullyConnectedNet``. Its weights are plain tensors so
    that the message passing can recompute the network in its backward pass
    (:func:`radial_mlp_hidden`, :func:`radial_mlp_hidden_backward`) instead of keeping its
    per-edge activations.

    Args:
        sizes: input width, hidden widths, output width.

    Shapes: (E, sizes[0]) -> (E, sizes[-1]).
    """

    def __init__(self, sizes: List[int]):
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes, sizes[1:])])
        self.activation_scale = float(normalize2mom(torch.nn.functional.silu).cst)

    def scaled_weights(self) -> List[torch.Tensor]:
        """The weights divided by the square roots of their fan-ins, those after the first also
        multiplied by the activation's scale c: (c silu(z)) W = silu(z) (c W) scales a small matrix
        instead of every edge's activations (and their derivatives, in training)."""
        weights = [w / math.sqrt(w.shape[0]) for w in self.weights]
        return weights[:1] + [self.activation_scale * w for w in weights[1:]]

    def forward(self, radial: torch.Tensor) -> torch.Tensor:
        weights = self.scaled_weights()
        hidden = radial_mlp_hidden(radial, weights[:-1])
        return hidden[-1] @ weights[-1]


def radial_mlp_hidden(radial: torch.Tensor, weights: List[torch.Tensor]) -> List[torch.Tensor]:
    """The pre-activations of every hidden layer, then the last hidden layer's output, given
    :meth:`RadialMLP.scaled_weights` (the activation's scale is in the next layer's weights)."""
    pre_activations: List[torch.Tensor] = []
    h = radial
    for w in weights:
        z = h @ w
        pre_activations.append(z)
        h = torch.nn.functional.silu(z)
    return pre_activations + [h] if len(weights) > 0 else [radial]


def radial_mlp_hidden_backward(
    grad_h: torch.Tensor,
    radial: torch.Tensor,
    weights: List[torch.Tensor],
    pre_activations: List[torch.Tensor],
    need_weights: bool,
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Gradients of the hidden layers' input and (if asked) scaled weights from that of their output.

    Written in differentiable operations: training differentiates it again.
    """
    grad_weights: List[torch.Tensor] = []
    for k in range(len(weights) - 1, -1, -1):
        z = pre_activations[k]
        sigmoid = torch.sigmoid(z)
        # silu'(z) = sigmoid(z) (1 + z - z sigmoid(z))
        grad_z = grad_h * sigmoid * torch.addcmul(1.0 + z, z, sigmoid, value=-1.0)
        if need_weights:
            h_in = radial if k == 0 else torch.nn.functional.silu(pre_activations[k - 1])
            grad_weights.insert(0, h_in.t() @ grad_z)
        grad_h = grad_z @ weights[k].t()
    return grad_h, grad_weights
