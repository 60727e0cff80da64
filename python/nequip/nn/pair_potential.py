r"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, switched off smoothly.

The universal ZBL pair energy (Ziegler, Biersack and Littmark, *The Stopping and Range of Ions
in Solids*, Pergamon 1985) of atoms with atomic numbers :math:`Z_i, Z_j` at distance :math:`r`:

.. math::

    V(r) = \frac{e^2}{4\pi\varepsilon_0} \frac{Z_i Z_j}{r} \, \phi(r / a), \qquad
    a = \frac{0.46850\ \text{Å}}{Z_i^{0.23} + Z_j^{0.23}},

    \phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
    + 0.02817 e^{-0.20162 x},

with :math:`e^2 / 4\pi\varepsilon_0 = 14.399645` eV·Å. It is multiplied by a switch
:math:`S` that is 1 below the inner radius :math:`r_1`, 0 beyond the outer radius :math:`r_2`,
and in between the quintic smooth step of :math:`t = (r - r_1) / (r_2 - r_1)`:

.. math::

    S = 1 - t^3 (10 - 15 t + 6 t^2),

whose first and second derivatives vanish at both radii: the pair energy is C2 there (its
forces C1). :math:`V` and :math:`S` both decrease, so :math:`V S` is purely repulsive (no
spurious well in the switching region).
"""

from typing import Dict, List

import torch

COULOMB_EV_A = 14.399645
"""e² / 4πε0 in eV·Å."""
SCREENING_LENGTH_A = 0.46850
"""The universal screening length's numerator, Å."""
SCREENING_EXPONENT = 0.23
SCREENING_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
SCREENING_DECAYS = (3.19980, 0.94229, 0.40290, 0.20162)


def smooth_switch(r: torch.Tensor, inner: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
    """1 for ``r <= inner``, 0 for ``r >= outer``, the quintic smooth step between (C2 at both)."""
    t = ((r - inner) / (outer - inner)).clamp(0.0, 1.0)
    return 1.0 - t * t * t * (10.0 + t * (-15.0 + 6.0 * t))


ZBL_KEYS = ("atomic_numbers", "inner_radius", "outer_radius")


def check_zbl(zbl, type_names: List[str], edge_cutoffs: List[float]) -> Dict[str, list]:
    """The resolved ZBL parameters (what :class:`ZBL` takes: ``atomic_numbers``, one per type,
    and ``inner_radius``, ``outer_radius``, ``num_types**2`` each, row-major), checked:
    integers 1 to 118, ``0 < inner < outer <= `` the pair's cutoff (``edge_cutoffs``,
    ``num_types**2``). ``nequip.model.build_model`` makes them from ``zbl: true`` or a
    partial mapping."""
    if not (isinstance(zbl, dict) and set(zbl) == set(ZBL_KEYS)):
        raise ValueError(
            f"zbl: NequIPModel takes the resolved parameters ({', '.join(ZBL_KEYS)}: one atomic number per type, "
            f"num_types**2 radii each), got {zbl!r}; nequip.model.build_model fills them in from zbl: true "
            "or a partial mapping"
        )
    num_types = len(type_names)
    atomic_numbers, inner, outer = (zbl[key] for key in ZBL_KEYS)
    if not isinstance(atomic_numbers, (list, tuple)) or len(atomic_numbers) != num_types:
        raise ValueError(f"zbl.atomic_numbers: needs one atomic number for each of the types {type_names}, got {atomic_numbers!r}")
    for name, z in zip(type_names, atomic_numbers):
        if isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118:
            raise ValueError(f"zbl.atomic_numbers: {name!r} has {z!r}, not an atomic number (an integer 1 to 118)")
    for key, radii in (("inner_radius", inner), ("outer_radius", outer)):
        if not (isinstance(radii, (list, tuple)) and len(radii) == num_types**2 and all(map(_is_number, radii))):
            raise ValueError(f"zbl.{key}: must be {num_types**2} numbers (row = center type), got {radii!r}")
    pairs = [f"{a}-{b}" for a in type_names for b in type_names]
    for pair, r_in, r_out, cutoff in zip(pairs, inner, outer, edge_cutoffs):
        if not 0 < r_in < r_out <= cutoff:
            raise ValueError(
                f"zbl: the {pair} pair needs 0 < inner_radius < outer_radius <= its cutoff {cutoff:g}, "
                f"got inner_radius {r_in:g} and outer_radius {r_out:g}"
            )
    return dict(atomic_numbers=[int(z) for z in atomic_numbers], inner_radius=[float(r) for r in inner],
                outer_radius=[float(r) for r in outer])  # fmt: skip


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ZBL(torch.nn.Module):
    """The switched ZBL pair energy of each edge, float64.

    Args (as :func:`check_zbl` returns them):
        atomic_numbers: the atomic number of each model type, in type order.
        inner_radius, outer_radius: the switching radii (Å) of each (center type, neighbor
            type), ``num_types**2`` numbers in row-major order, ``0 < inner < outer``.

    Shapes: ``edge_length`` (E,) float64, ``center_types`` and ``neighbor_types`` (E,) int64
    -> (E,) float64, eV.
    """

    def __init__(self, atomic_numbers: List[int], inner_radius: List[float], outer_radius: List[float]):
        super().__init__()
        num_types = len(atomic_numbers)
        # not in the state dict: the model's config is where they come from, and so the same
        # weights load with ZBL or without
        for name, values, shape in (
            ("atomic_numbers", atomic_numbers, (num_types,)),
            ("inner_radius", inner_radius, (num_types, num_types)),
            ("outer_radius", outer_radius, (num_types, num_types)),
        ):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float64).view(shape), persistent=False)
        # the constants as attributes: TorchScript reads no module globals
        self.coulomb = COULOMB_EV_A
        self.screening_length = SCREENING_LENGTH_A
        self.screening_exponent = SCREENING_EXPONENT
        self.screening_coefficients: List[float] = list(SCREENING_COEFFICIENTS)
        self.screening_decays: List[float] = list(SCREENING_DECAYS)

    def forward(self, edge_length: torch.Tensor, center_types: torch.Tensor, neighbor_types: torch.Tensor) -> torch.Tensor:
        z_i = self.atomic_numbers[center_types]
        z_j = self.atomic_numbers[neighbor_types]
        exponent = self.screening_exponent
        x = edge_length * (torch.pow(z_i, exponent) + torch.pow(z_j, exponent)) / self.screening_length
        screening = torch.zeros_like(x)
        for coefficient, decay in zip(self.screening_coefficients, self.screening_decays):
            screening = screening + coefficient * torch.exp(-decay * x)
        energy = self.coulomb * z_i * z_j / edge_length * screening
        inner = self.inner_radius[center_types, neighbor_types]
        outer = self.outer_radius[center_types, neighbor_types]
        return energy * smooth_switch(edge_length, inner, outer)

