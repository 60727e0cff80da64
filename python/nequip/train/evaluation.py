"""Evaluate a trained model on labelled structures: metrics, predictions, parity plots.

What ``nequip-test`` runs. Everything is in eV and Å: energies per atom in eV/atom, forces in
eV/Å, stresses in eV/Å³.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import ase
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from ..data import TypeMapper, batch_frames, from_ase, keys, read_frames
from ..utils.atomic_io import atomic_open, atomic_path
from .checkpoint import load_checkpoint

UNITS = {"energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³"}


def load_model_for_evaluation(path) -> torch.nn.Module:
    """The model in a checkpoint or a package (``nequip.package.load_model``), in eval mode."""
    try:
        from ..package import load_model
    except ImportError:  # packaging not installed: checkpoints still work
        from .checkpoint import model_from_checkpoint as load_model
    return load_model(path).eval()


def data_settings_of_checkpoint(path) -> Dict[str, Any]:
    """Units and species mapping of the data a checkpoint was trained on (defaults for testing)."""
    if not str(path).endswith(".ckpt"):
        return {}
    data = load_checkpoint(path)["hyper_parameters"]["config"]["data"]
    return {key: data[key] for key in ("energy_units_to_eV", "length_units_to_A", "species_to_type")}


def predict(
    model: torch.nn.Module,
    atoms_list: Sequence[ase.Atoms],
    species_to_type: Optional[Dict[str, str]] = None,
    energy_units_to_eV: float = 1.0,
    length_units_to_A: float = 1.0,
    batch_size: int = 8,
) -> List[Dict[str, Dict[str, np.ndarray]]]:
    """Per frame, ``{"reference": labels, "predicted": outputs}`` as numpy arrays (eV, Å).

    Predicted keys: total_energy (1,), atomic_energy (N,), forces (N, 3), and stress (3, 3)
    when every frame is periodic and stress-labelled.
    """
    per_edge_type_cutoff = model.config.get("per_edge_type_cutoff")
    num_types = len(model.type_names)
    if per_edge_type_cutoff is not None:
        per_edge_type_cutoff = np.reshape(per_edge_type_cutoff, (num_types, num_types))
    type_mapper = TypeMapper(model.type_names, species_to_type)
    frames = []
    for index, atoms in enumerate(atoms_list):
        try:
            frames.append(
                from_ase(
                    atoms,
                    type_mapper,
                    model.r_max,
                    per_edge_type_cutoff=per_edge_type_cutoff,
                    energy_units_to_eV=energy_units_to_eV,
                    length_units_to_A=length_units_to_A,
                )
            )
        except ValueError as err:
            raise ValueError(f"frame {index}: {err}") from None
    model.compute_forces = True
    model.compute_stress = all(keys.STRESS in frame and bool(frame[keys.PBC].all()) for frame in frames)

    results = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        out = model(batch_frames(chunk))
        first_atom = 0
        for frame_index, frame in enumerate(chunk):
            atoms_slice = slice(first_atom, first_atom + len(frame[keys.POS]))
            first_atom = atoms_slice.stop
            predicted = {
                keys.TOTAL_ENERGY: out[keys.TOTAL_ENERGY][frame_index].detach().numpy(),
                keys.ATOMIC_ENERGY: out[keys.ATOMIC_ENERGY][atoms_slice, 0].detach().numpy(),
                keys.FORCES: out[keys.FORCES][atoms_slice].detach().numpy(),
            }
            if model.compute_stress:
                predicted[keys.STRESS] = out[keys.STRESS][frame_index].detach().numpy()
            reference = {
                key: frame[key].numpy().reshape(predicted[key].shape)
                for key in keys.LABEL_KEYS
                if key in frame and key in predicted
            }
            results.append(
                {"reference": reference, "predicted": predicted, "atom_types": frame[keys.ATOM_TYPES].numpy()}
            )
    return results


def _pairs(results, quantity: str, atom_type: Optional[int] = None):
    """All (predicted, reference) values of one quantity, flattened."""
    key = {"energy_per_atom": keys.TOTAL_ENERGY, "forces": keys.FORCES, "stress": keys.STRESS}[quantity]
    predicted, reference = [], []
    for result in results:
        if key not in result["reference"]:
            continue
        p, r = result["predicted"][key], result["reference"][key]
        if quantity == "energy_per_atom":
            p, r = p / len(result["atom_types"]), r / len(result["atom_types"])
        if atom_type is not None:
            p, r = p[result["atom_types"] == atom_type], r[result["atom_types"] == atom_type]
        predicted.append(p.ravel())
        reference.append(r.ravel())
    if not predicted:
        return None
    return np.concatenate(predicted), np.concatenate(reference)


def compute_metrics(results, type_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """MAE and RMSE per quantity present (``forces_<type>`` per type), as floats."""
    metrics = {}
    rows = [("energy_per_atom", "energy_per_atom", None), ("forces", "forces", None)]
    rows += [(f"forces_{t}", "forces", i) for i, t in enumerate(type_names)]
    rows += [("stress", "stress", None)]
    for name, quantity, atom_type in rows:
        pairs = _pairs(results, quantity, atom_type)
        if pairs is None or len(pairs[0]) == 0:
            continue
        error = pairs[0] - pairs[1]
        metrics[name] = {
            "mae": float(np.mean(np.abs(error))),
            "rmse": float(np.sqrt(np.mean(error**2))),
            "unit": UNITS[quantity],
            "count": int(error.size),
        }
    return metrics


def format_metrics(metrics: Dict[str, Dict[str, float]]) -> str:
    lines = [f"{'quantity':<22}{'MAE':>14}{'RMSE':>14}  unit"]
    for name, row in metrics.items():
        lines.append(f"{name:<22}{row['mae']:>14.6g}{row['rmse']:>14.6g}  {row['unit']}")
    return "\n".join(lines)


def write_predictions(path, atoms_list: Sequence[ase.Atoms], results, length_units_to_A: float = 1.0) -> None:
    """extxyz, in eV and Å: predictions as the calculator results, labels as REF_* keys."""
    import ase.io

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


def plot_parity(path, results) -> None:
    """Predicted against reference energies per atom, force components (and stresses), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(q, _pairs(results, q)) for q in UNITS]
    panels = [(q, pairs) for q, pairs in panels if pairs is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (quantity, (predicted, reference)) in zip(axes[0], panels):
        low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.scatter(reference, predicted, s=4, alpha=0.6)
        ax.set_xlabel(f"reference {quantity.replace('_', ' ')} ({UNITS[quantity]})")
        ax.set_ylabel(f"predicted ({UNITS[quantity]})")
        ax.set_title(f"MAE {np.mean(np.abs(predicted - reference)):.3g} {UNITS[quantity]}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def evaluate(
    model_path,
    data_path,
    output_dir,
    index: str = ":",
    format: Optional[str] = None,
    batch_size: int = 8,
    energy_units_to_eV: Optional[float] = None,
    length_units_to_A: Optional[float] = None,
) -> Dict[str, Dict[str, float]]:
    """Test ``model_path`` on ``data_path``; write predictions.extxyz, parity.png, metrics.json.

    Units and species mapping default to those the model was trained with (checkpoints) or 1.
    """
    output_dir = Path(output_dir)
    model = load_model_for_evaluation(model_path)
    settings = data_settings_of_checkpoint(model_path)
    energy_units_to_eV = energy_units_to_eV or settings.get("energy_units_to_eV", 1.0)
    length_units_to_A = length_units_to_A or settings.get("length_units_to_A", 1.0)
    atoms_list = read_frames(data_path, index=index, format=format)
    results = predict(
        model,
        atoms_list,
        species_to_type=settings.get("species_to_type"),
        energy_units_to_eV=energy_units_to_eV,
        length_units_to_A=length_units_to_A,
        batch_size=batch_size,
    )
    metrics = compute_metrics(results, model.type_names)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(output_dir / "predictions.extxyz", atoms_list, results, length_units_to_A)
    plot_parity(output_dir / "parity.png", results)
    with atomic_open(output_dir / "metrics.json") as f:
        json.dump(metrics, f, indent=2)
    return metrics
