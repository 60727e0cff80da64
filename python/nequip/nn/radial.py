"""Radial functions of the edge length: a Bessel basis and a smooth cutoff envelope."""

import math

import torch


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
