"""A committee of NequIP models: K models of the same type names and cutoffs evaluated on one
neighbor list, giving their mean (or the first model's results) and their deviation.

Active learning picks the structures where independently trained models disagree. The
deviations are DeePMD-kit's (population standard deviations over the K members, ``<.>`` their
mean):

- ``force_deviation`` (N,), eV/Å: per atom, the norm of the standard deviation of the K force
  vectors, ``sqrt(<|F_k - <F>|^2>)``;
- ``energy_deviation`` (F, 1), eV: the standard deviation of the K total energies;
- ``virial_deviation`` (F, 3, 3), eV: the standard deviation of each virial component
  (DeePMD-kit's model_devi.out divides it by the number of atoms).

A committee is compiled like one model (``nequip-compile a.nequip.zip b.nequip.zip ...
ens.nequip.pth``); its metadata records the committee size and what drives the dynamics
(``committee_size``, ``committee_drive``: :mod:`nequip.compile.contract`).
"""

from typing import Dict, List, Optional, Sequence

import torch

from nequip.data import keys

# "mean": the committee mean; "first": the first member's (DeePMD-kit's way: the others only
# give the deviation)
DRIVES = ("mean", "first")

# metadata every member must share (the file has one value of each), with how messages name it
_SHARED_METADATA = {
    "type_names": "type names",
    "r_max": "cutoff r_max",
    "per_edge_type_cutoff": "per-edge-type cutoffs",
    "model_dtype": "model_dtype",
}
# per-model keys that mean nothing for a committee: the layer widths are those of one model's
# feature exchange between LAMMPS ranks; a committee records each member's instead
# (COMMITTEE_LAYER_FEATURE_WIDTHS: the members run layer by layer one after the other)
_DROPPED_METADATA = ("layer_feature_widths",)


class CommitteeError(ValueError):
    """The models cannot form a committee (fewer than two, or metadata that differ)."""


class Committee(torch.nn.Module):
    """K >= 2 models evaluated on the same frame, one forward call.

    Args:
        members: the models (``forward(Dict[str, Tensor]) -> Dict[str, Tensor]`` and
            ``metadata()``, FILE_CONTRACT §1-2), of the same type names, cutoffs and model_dtype.
        names: how messages name each member (its file); default "model 1", "model 2", ...
        drive: "mean" (default): energies, forces, stress and virials are the committee means;
            "first": the first member's.

    Forward returns the inputs and the outputs of one model (atomic_energy (N, 1),
    total_energy (F, 1), forces (N, 3), and stress, virial (F, 3, 3) and atom_virial (N, 3, 3)
    where the members give them), plus (nequip.data.keys) FORCE_DEVIATION (N,), ENERGY_DEVIATION (F, 1) and,
    with virials, VIRIAL_DEVIATION (F, 3, 3); float64.

    Raises CommitteeError naming the difference when the members cannot form a committee.
    """

    def __init__(self, members: Sequence[torch.nn.Module], names: Optional[Sequence[str]] = None, drive: str = "mean"):
        super().__init__()
        names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(members))]
        if len(names) != len(members):
            raise ValueError(f"{len(members)} members but {len(names)} names")
        if len(members) < 2:
            raise CommitteeError(
                f"a committee needs at least two models, got {len(members)}: give several models "
                "(independently trained) to compare, or compile the one model on its own"
            )
        if drive not in DRIVES:
            raise CommitteeError(f"unknown committee drive {drive!r}: expected one of {', '.join(DRIVES)}")
        _check_shared_metadata([member.metadata() for member in members], names)
        self.members = torch.nn.ModuleList(members)
        self.drive_with_first: bool = drive == "first"
        self.drive = drive
        first = members[0]
        self.type_names = first.type_names
        self.num_types = first.num_types
        self.r_max = first.r_max
        self.compute_forces = all(getattr(member, "compute_forces", True) for member in members)
        self.compute_stress = all(getattr(member, "compute_stress", True) for member in members)
        self.committee_size = len(members)
        # a TorchScript file runs layer by layer (LAMMPS on several ranks) through each
        # member's exported parts, where every member has them
        self.torchscript_layer_parts = all(getattr(member, "torchscript_layer_parts", True) for member in members)

    @torch.jit.ignore
    def metadata(self) -> Dict[str, str]:
        """The first member's metadata (the shared keys are equal), with the number of layers
        and the closest training pair the largest of the members', and COMMITTEE_SIZE,
        COMMITTEE_DRIVE and (members that record their layer widths)
        COMMITTEE_LAYER_FEATURE_WIDTHS (nequip.compile.contract)."""
        from nequip.compile.contract import (  # the metadata keys' one home
            COMMITTEE_DRIVE,
            COMMITTEE_LAYER_FEATURE_WIDTHS,
            COMMITTEE_SIZE,
        )

        each = [member.metadata() for member in self.members]
        metadata = {key: value for key, value in each[0].items() if key not in _DROPPED_METADATA}
        for key in ("num_layers", "closest_training_pair"):
            values = [float(m[key]) for m in each if key in m]
            if values:
                largest = max(values)
                metadata[key] = str(int(largest)) if key == "num_layers" else repr(largest)
        metadata[COMMITTEE_SIZE] = str(len(each))
        metadata[COMMITTEE_DRIVE] = self.drive
        if all("layer_feature_widths" in m for m in each):
            metadata[COMMITTEE_LAYER_FEATURE_WIDTHS] = "; ".join(m["layer_feature_widths"] for m in each)
        return metadata

    def _combine(self, values: List[torch.Tensor]) -> torch.Tensor:
        if self.drive_with_first:
            return values[0]
        return torch.stack(values).mean(0)

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Every member on ``data`` (one neighbor list), then their mean (or the first one's
        results) and deviations; see the class docstring."""
        results: List[Dict[str, torch.Tensor]] = []
        for member in self.members:
            results.append(member(data))
        out = data.copy()
        for key in (keys.ATOMIC_ENERGY, keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL, keys.ATOM_VIRIAL):
            if key in results[0]:
                out[key] = self._combine([result[key] for result in results])
        forces = torch.stack([result[keys.FORCES] for result in results])  # (K, N, 3)
        out[keys.FORCE_DEVIATION] = (forces - forces.mean(0)).square().sum(-1).mean(0).sqrt()
        energies = torch.stack([result[keys.TOTAL_ENERGY] for result in results])  # (K, F, 1)
        out[keys.ENERGY_DEVIATION] = energies.std(0, unbiased=False)
        if keys.VIRIAL in results[0]:
            virials = torch.stack([result[keys.VIRIAL] for result in results])  # (K, F, 3, 3)
            out[keys.VIRIAL_DEVIATION] = virials.std(0, unbiased=False)
        return out


def _check_shared_metadata(metadata: List[Dict[str, str]], names: List[str]) -> None:
    """CommitteeError naming the first member whose type names, cutoffs or model_dtype differ
    from the first member's."""
    first = metadata[0]
    for name, member in zip(names[1:], metadata[1:]):
        for key, what in _SHARED_METADATA.items():
            if _shared_value(key, member.get(key)) != _shared_value(key, first.get(key)):
                raise CommitteeError(
                    f"the models of a committee must have the same {what}: {name} has "
                    f"{_describe(key, member.get(key))}, {names[0]} has {_describe(key, first.get(key))}"
                )


def _shared_value(key: str, value: Optional[str]):
    if value is None:
        return None
    if key in ("r_max", "per_edge_type_cutoff"):
        return tuple(float(word) for word in value.split())
    return value


def _describe(key: str, value: Optional[str]) -> str:
    if value is None:
        return "none (r_max for every pair)" if key == "per_edge_type_cutoff" else "none"
    return f"'{value}'"
