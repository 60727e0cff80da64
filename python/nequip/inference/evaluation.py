"""Evaluate a model on labelled structures: metrics, predictions, parity plots.

What ``nequip-test`` runs. The model is any of the files a user deploys, opened by
:func:`nequip.inference.open_model`: an eager model (checkpoint or package) or a compiled one
(the C++ runtime that ASE and LAMMPS run). Both are called the same way here and give the same
table, predictions and plot. The metrics are :class:`nequip.train.metrics.ErrorMetrics`, the
ones of validation and of the test stage after training.

Everything is in eV and Å: energies per atom in eV/atom, forces in eV/Å, stresses in eV/Å³.
A quantity is evaluated when every selected frame has its label (stress: and is periodic);
the others are named in the notes.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ase
import ase.io
import numpy as np
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import string2index
from ase.stress import full_3x3_to_voigt_6_stress

from ..data import TypeMapper, from_ase, keys, read_frames
from ..train.metrics import QUANTITIES, ErrorMetrics, predicted_and_reference
from ..utils.atomic_io import atomic_open, atomic_path
from .opened import OpenedModel

_DATA_SETTINGS = ("energy_units_to_eV", "length_units_to_A", "species_to_type")


def data_settings_of(model: OpenedModel) -> Dict[str, Any]:
    """Units and species mapping of the data a model was trained on (defaults for testing).

    From the training configuration in a checkpoint, or the one a package keeps; none for a
    compiled file.
    """
    training_config = getattr(model, "training_config", None)
    config = training_config() if training_config is not None else None
    data = (config or {}).get("data") or {}
    return {key: data[key] for key in _DATA_SETTINGS if data.get(key) is not None}


def select_frames(path, index: str = ":", format: Optional[str] = None) -> Tuple[List[int], List[ase.Atoms]]:
    """The frames of ``path`` that ``index`` (ASE syntax: ``3``, ``-1``, ``10:20``, ``::2``) selects,
    with their indices in the file."""
    atoms_list = read_frames(path, index=":", format=format)
    count = len(atoms_list)
    selection = string2index(str(index))
    if isinstance(selection, str):
        raise ValueError(f"frame index {index!r} is neither a frame number nor a slice (such as 0, -1, 10:20, ::2)")
    if isinstance(selection, int):
        if not -count <= selection < count:
            raise ValueError(
                f"frame index {selection} is out of range: {path} has {count} frame{'s' if count > 1 else ''} "
                f"(0 to {count - 1}, or -{count} to -1)"
            )
        indices = [selection % count]
    else:
        try:
            indices = list(range(count)[selection])
        except ValueError as err:  # a zero step
            raise ValueError(f"frame index {index!r}: {err}") from None
        if not indices:
            raise ValueError(f"frame index {index!r} selects none of the {count} frames of {path}")
    return indices, [atoms_list[i] for i in indices]


def predict(
    model: OpenedModel,
    atoms_list: Sequence[ase.Atoms],
    species_to_type: Optional[Dict[str, str]] = None,
    energy_units_to_eV: float = 1.0,
    length_units_to_A: float = 1.0,
    batch_size: int = 8,
    frame_indices: Optional[Sequence[int]] = None,
    source=None,
) -> List[Dict[str, Any]]:
    """Per frame, ``{"reference": labels, "predicted": outputs, "atom_types": ...}`` as numpy arrays (eV, Å).

    ``model`` is an opened model file (:func:`nequip.inference.open_model`; an eager one
    evaluates ``batch_size`` frames per call). Predicted keys:
    total_energy (1,), atomic_energy (N,), forces (N, 3), and stress (3, 3) when every frame
    is periodic and stress-labelled. A frame that cannot be used is reported as
    ``<source>: frame <n>: <reason>``, ``n`` from ``frame_indices`` (the frames' indices in
    their file; by default their positions in ``atoms_list``).
    """
    frame_indices = list(range(len(atoms_list))) if frame_indices is None else list(frame_indices)
    type_mapper = TypeMapper(
        list(model.type_names),
        species_to_type,
        remedy="the model cannot predict for them: test frames of its species only (select them with --index)",
    )
    frames = []
    for index, atoms in zip(frame_indices, atoms_list):
        try:
            frames.append(
                from_ase(
                    atoms,
                    type_mapper,
                    model.r_max,
                    per_edge_type_cutoff=model.per_edge_type_cutoff,
                    energy_units_to_eV=energy_units_to_eV,
                    length_units_to_A=length_units_to_A,
                )
            )
        except ValueError as err:
            raise ValueError(f"{'' if source is None else f'{source}: '}frame {index}: {err}") from None
    with_stress = model.gives_stress and all(keys.STRESS in frame and bool(frame[keys.PBC].all()) for frame in frames)
    # labels stay out of the model's inputs
    outputs = model.evaluate([_inputs(frame) for frame in frames], batch_size=batch_size)

    results = []
    for frame, out in zip(frames, outputs):
        prediction = {
            keys.TOTAL_ENERGY: out[keys.TOTAL_ENERGY].reshape(1).numpy(),
            keys.ATOMIC_ENERGY: out[keys.ATOMIC_ENERGY].reshape(-1).numpy(),
            keys.FORCES: out[keys.FORCES].reshape(-1, 3).numpy(),
        }
        if with_stress:
            prediction[keys.STRESS] = out[keys.STRESS].reshape(3, 3).numpy()
        reference = {
            key: frame[key].numpy().reshape(prediction[key].shape)
            for key in keys.LABEL_KEYS
            if key in frame and key in prediction
        }
        results.append({"reference": reference, "predicted": prediction, "atom_types": frame[keys.ATOM_TYPES].numpy()})
    return results


def _inputs(frame: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {key: value for key, value in frame.items() if key not in keys.LABEL_KEYS}


def evaluated_quantities(results, frame_indices: Optional[Sequence[int]] = None) -> Tuple[List[str], List[str]]:
    """The quantities every frame has a label (and a prediction) for, and a note for each other one."""
    frame_indices = list(range(len(results))) if frame_indices is None else list(frame_indices)
    evaluated, notes = [], []
    for quantity, (key, _) in QUANTITIES.items():
        lacking = [index for index, result in zip(frame_indices, results) if key not in result["reference"]]
        if not lacking:
            evaluated.append(quantity)
            continue
        label = "energy" if key == keys.TOTAL_ENERGY else key
        if len(lacking) == len(results):
            why = "no frame has" if quantity != "stress" else "not every frame is periodic and has"
            notes.append(f"{quantity} not evaluated: {why} the label '{label}'")
        else:
            shown = ", ".join(map(str, lacking[:5])) + (", ..." if len(lacking) > 5 else "")
            notes.append(
                f"{quantity} not evaluated: {len(lacking)} of {len(results)} frames lack the label '{label}' "
                f"(frame{'s' if len(lacking) > 1 else ''} {shown})"
            )
    return evaluated, notes


def _as_batch(result) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """One frame's result as the (labelled batch, outputs) pair that training's metrics take."""
    atom_types = torch.from_numpy(result["atom_types"])
    batch = {keys.NUM_ATOMS: torch.tensor([len(atom_types)]), keys.ATOM_TYPES: atom_types}
    batch.update({key: torch.from_numpy(value) for key, value in result["reference"].items()})
    return batch, {key: torch.from_numpy(value) for key, value in result["predicted"].items()}


def compute_metrics(results, type_names: Sequence[str], quantities: Optional[Sequence[str]] = None):
    """``{row: {"mae", "rmse", "unit", "count"}}`` of the ``quantities`` (default: every one all
    frames are labelled with), with per-type forces: :class:`ErrorMetrics`, as in training."""
    if quantities is None:
        quantities, _ = evaluated_quantities(results)
    metrics = ErrorMetrics(quantities, type_names)
    for result in results:
        metrics.update(*_as_batch(result))
    return {
        row: {
            "mae": float(values["mae"]),
            "rmse": float(values["rmse"]),
            "unit": ErrorMetrics.unit(row),
            "count": int(values["count"]),
        }
        for row, values in metrics.compute().items()
    }


def format_metrics(metrics: Dict[str, Dict[str, Any]]) -> str:
    lines = [f"{'quantity':<22}{'MAE':>14}{'RMSE':>14}  unit"]
    for name, row in metrics.items():
        lines.append(f"{name:<22}{row['mae']:>14.6g}{row['rmse']:>14.6g}  {row['unit']}")
    return "\n".join(lines)


def write_predictions(path, atoms_list: Sequence[ase.Atoms], results, length_units_to_A: float = 1.0) -> None:
    """extxyz, in eV and Å: predictions as the calculator results, labels as REF_* keys."""
    written = []
    for atoms, result in zip(atoms_list, results):
        atoms = atoms.copy()
        atoms.set_cell(atoms.cell.array * length_units_to_A)
        atoms.positions = atoms.positions * length_units_to_A
        predicted, reference = result["predicted"], result["reference"]
        if keys.TOTAL_ENERGY in reference:
            atoms.info["REF_energy"] = float(reference[keys.TOTAL_ENERGY][0])
        if keys.FORCES in reference:
            atoms.arrays["REF_forces"] = reference[keys.FORCES]
        if keys.STRESS in reference:
            atoms.info["REF_stress"] = full_3x3_to_voigt_6_stress(reference[keys.STRESS])
        atoms.arrays["atomic_energy"] = predicted[keys.ATOMIC_ENERGY]
        calculator_results = {"energy": float(predicted[keys.TOTAL_ENERGY][0]), "forces": predicted[keys.FORCES]}
        if keys.STRESS in predicted:
            calculator_results["stress"] = predicted[keys.STRESS]
        atoms.calc = SinglePointCalculator(atoms, **calculator_results)
        written.append(atoms)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, written, format="extxyz")


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None: matplotlib is optional (the ``test`` extra)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def _parity_title(quantity: str, metric: Dict[str, Any], predicted: np.ndarray, reference: np.ndarray) -> str:
    """The figure a reader judges the panel by: the MAE, and what it is measured against."""
    mae, unit = metric["mae"], metric["unit"]
    name = quantity.replace("_", " ")
    if quantity == "energy_per_atom":
        return f"{name}: MAE {1000 * mae:.2f} meV/atom"
    if quantity == "forces":
        rms = float(np.sqrt(np.mean(reference**2)))
        return f"{name}: MAE {mae:.3g} {unit}\n= {mae / rms:.2f} x the reference RMS ({rms:.3g} {unit})"
    text = f"{name}: MAE {mae:.3g} {unit}"
    if quantity == "stress" and reference.size > 1 and np.std(reference) > 0 and np.std(predicted) > 0:
        text += f"\ncorrelation {np.corrcoef(predicted, reference)[0, 1]:.3f}"
    return text


def plot_parity(path, results, metrics: Dict[str, Dict[str, Any]], plt) -> None:
    """Predicted against reference values of each quantity in ``metrics`` (energies per atom), PNG."""
    quantities = [quantity for quantity in QUANTITIES if quantity in metrics]
    figure, axes = plt.subplots(1, len(quantities), figsize=(4.5 * len(quantities), 4.2), squeeze=False)
    for ax, quantity in zip(axes[0], quantities):
        pairs = [predicted_and_reference(*_as_batch(result), quantity) for result in results]
        predicted = np.concatenate([p.numpy().ravel() for p, _ in pairs])
        reference = np.concatenate([r.numpy().ravel() for _, r in pairs])
        unit = metrics[quantity]["unit"]
        low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.scatter(reference, predicted, s=4, alpha=0.6)
        ax.set_xlabel(f"reference {quantity.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(_parity_title(quantity, metrics[quantity], predicted, reference), fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.yaxis.set_major_locator(plt.MaxNLocator(5))
    figure.suptitle(f"{len(results)} frames: predicted against reference")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def check_output_dir(output_dir) -> Path:
    """``output_dir`` as a Path, refused before any work if it is, or lies under, a file."""
    output_dir = Path(output_dir)
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == output_dir else f"lies under the file {existing}"
        raise ValueError(f"output directory {output_dir} {where}; name a directory (it is created if needed)")
    return output_dir


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` found and wrote."""

    metrics: Dict[str, Dict[str, Any]]
    notes: List[str]
    """Quantities not evaluated, and outputs not written, with the reason."""
    written: List[str]
    """The files written to the output directory."""


def evaluate(
    model,
    data_path,
    output_dir,
    index: str = ":",
    format: Optional[str] = None,
    batch_size: int = 8,
    energy_units_to_eV: Optional[float] = None,
    length_units_to_A: Optional[float] = None,
    species_to_type: Optional[Dict[str, str]] = None,
) -> Evaluation:
    """Test ``model`` on the frames of ``data_path``; write predictions.extxyz, parity.png, metrics.json.

    Units and species mapping default to 1 and the model's type names (the command passes
    those of the model's training data, :func:`data_settings_of`). Every input is checked
    before anything is written; parity.png needs matplotlib.
    """
    output_dir = check_output_dir(output_dir)
    energy_units_to_eV = 1.0 if energy_units_to_eV is None else energy_units_to_eV
    length_units_to_A = 1.0 if length_units_to_A is None else length_units_to_A
    frame_indices, atoms_list = select_frames(data_path, index=index, format=format)
    results = predict(
        model,
        atoms_list,
        species_to_type=species_to_type,
        energy_units_to_eV=energy_units_to_eV,
        length_units_to_A=length_units_to_A,
        batch_size=batch_size,
        frame_indices=frame_indices,
        source=data_path,
    )
    quantities, notes = evaluated_quantities(results, frame_indices)
    if not quantities:
        raise ValueError(
            f"the frames of {data_path} have no labels to test against: give frames with reference energies, "
            "forces or stresses (extxyz: energy=... in the comment line, a forces column)"
        )
    metrics = compute_metrics(results, model.type_names, quantities)

    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(output_dir / "predictions.extxyz", atoms_list, results, length_units_to_A)
    written = ["predictions.extxyz"]
    plt = _pyplot()
    if plt is not None:
        plot_parity(output_dir / "parity.png", results, metrics, plt)
        written.append("parity.png")
    else:
        notes.append("parity.png not written: matplotlib is not installed (pip install matplotlib)")
    with atomic_open(output_dir / "metrics.json") as f:
        json.dump(metrics, f, indent=2)
    written.append("metrics.json")
    return Evaluation(metrics=metrics, notes=notes, written=written)
