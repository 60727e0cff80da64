"""``model.zbl`` as a user gives it (true, or a mapping with any of atomic_numbers, inner_radius,
outer_radius) resolved to the parameters the model takes (:func:`nequip.nn.pair_potential.check_zbl`).

Here rather than in the model's module: the defaults come from ASE's element data, and the
code that packages intern (the model's) must not import ASE; a packaged model is never
constructed again, so it never needs them.
"""

from typing import List

from ase.data import atomic_numbers as ATOMIC_NUMBERS
from ase.data import covalent_radii as COVALENT_RADII

from ..nn.pair_potential import ZBL_KEYS, check_zbl

INNER_FRACTION = 0.5
OUTER_FRACTION = 0.75
"""Default switching radii: these fractions of the sum of the pair's covalent radii (Cordero et
al. 2008, as ``ase.data.covalent_radii``), the outer one capped by the pair's cutoff (then the
inner one keeps its ratio to it). For Cu-Cu 1.32 and 1.98 Å, against a nearest-neighbor
distance of 2.55 Å; for C-C 0.76 and 1.14 Å, below the triple bond's 1.20 Å."""


def resolve_zbl(zbl, type_names: List[str], edge_cutoffs: List[float]):
    """``model.zbl`` as given (None, a bool, or a mapping with any of ``atomic_numbers``,
    ``inner_radius``, ``outer_radius``) -> None or the resolved mapping :class:`ZBL` takes
    (``atomic_numbers`` in type order, the radii as ``num_types**2`` row-major lists).

    ``atomic_numbers``: ``{type name: Z}`` (or a list in type order); left out, each type name
    must be a chemical symbol. Each radius: one number for every pair, ``num_types**2``
    numbers (row = center type), or left out for the defaults (INNER_FRACTION,
    OUTER_FRACTION). ``edge_cutoffs`` (``num_types**2``) bound the outer radii; a default outer
    radius beyond its pair's cutoff is the cutoff, and the default inner radius keeps its ratio.
    """
    if zbl is None or zbl is False:
        return None
    if zbl is True:
        zbl = {}
    if not isinstance(zbl, dict):
        raise ValueError(f"zbl: must be true, false or a mapping with keys {', '.join(ZBL_KEYS)}; got {zbl!r}")
    unknown = sorted(set(zbl) - set(ZBL_KEYS))
    if unknown:
        raise ValueError(f"zbl: unknown option(s) {', '.join(map(repr, unknown))}; the options are {', '.join(ZBL_KEYS)}")
    atomic_numbers = _atomic_numbers(zbl.get("atomic_numbers"), type_names)
    pairs = [(a, b) for a in atomic_numbers for b in atomic_numbers]
    # outer: a fraction of the covalent radii, within the cutoff; inner: in proportion to it
    outer = zbl.get("outer_radius")
    if outer is None:
        outer = [min(OUTER_FRACTION * _covalent_sum(*pair), cutoff) for pair, cutoff in zip(pairs, edge_cutoffs)]
    outer = _per_pair(outer, len(pairs))
    inner = zbl.get("inner_radius")
    if inner is None:
        inner = [
            min(INNER_FRACTION * _covalent_sum(*pair), INNER_FRACTION / OUTER_FRACTION * r)
            if isinstance(r, (int, float)) else r
            for pair, r in zip(pairs, outer)
        ]  # fmt: skip
    inner = _per_pair(inner, len(pairs))
    return check_zbl(dict(atomic_numbers=atomic_numbers, inner_radius=inner, outer_radius=outer), type_names, edge_cutoffs)


def _covalent_sum(z_i: int, z_j: int) -> float:
    return float(COVALENT_RADII[z_i] + COVALENT_RADII[z_j])


def _atomic_numbers(value, type_names: List[str]):
    """The atomic numbers in type order (checked by check_zbl)."""
    if value is None:
        not_elements = [name for name in type_names if ATOMIC_NUMBERS.get(name, 0) == 0]
        if not_elements:
            raise ValueError(
                f"zbl: the type name(s) {', '.join(map(repr, not_elements))} are not chemical symbols: give the "
                f"atomic number of each type, e.g. zbl: {{atomic_numbers: {{{type_names[0]}: 29}}}}"
            )
        return [ATOMIC_NUMBERS[name] for name in type_names]
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(type_names))
        missing = [name for name in type_names if name not in value]
        if unknown or missing:
            raise ValueError(
                f"zbl.atomic_numbers: must give the atomic number of each of the model's types {type_names}; "
                f"unknown: {unknown}, missing: {missing}"
            )
        return [value[name] for name in type_names]
    return value


def _per_pair(value, num_pairs: int):
    """One number for every pair, or the list as given (checked by check_zbl)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value] * num_pairs
    return value
