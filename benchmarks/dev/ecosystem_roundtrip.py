"""Our package loaded by the other NequIP release: its ModelFromPackage against our eager model.

Our packages (format 2 on) also carry the entries that nequip 0.19.1 reads
(``model/package_metadata.txt``, ``model/eager_model.pkl``, ``model/example_data.pkl``). This
script checks that that release, in its own venv (build/reference-venv, made as
compare_reference.py makes it), loads a package of ours with its ``ModelFromPackage`` and,
called on its own atomic data dictionaries (its ``from_ase`` and neighbor list), reproduces the
energies, per-atom energies, forces and stress of our eager model (nequip.load.load_model) on
the same frames: periodic (the package's example frame's structure, rattled; a triclinic cell)
and not (a cluster). Prints one JSON object: each frame's relative errors (largest difference
over largest value) and the largest of them.

    .venv/bin/python benchmarks/dev/ecosystem_roundtrip.py demo_output/model.nequip.zip [--json out.json]

The other side runs this same file in build/reference-venv with ``--their-side``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = ROOT / "build" / "reference-venv" / "bin" / "python"
QUANTITIES = ("total_energy", "atomic_energy", "forces", "stress")


def frames(type_names, r_max):
    """Periodic (orthorhombic, triclinic) and non-periodic frames of the model's species."""
    from ase import Atoms
    from ase.build import bulk

    symbols = list(type_names)
    cubic = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 2, 1))
    cubic.set_chemical_symbols([symbols[i % len(symbols)] for i in range(len(cubic))])
    cubic.rattle(0.1, seed=1)
    triclinic = bulk("Cu", "fcc", a=3.8).repeat((2, 2, 2))
    triclinic.set_chemical_symbols([symbols[(i // 3) % len(symbols)] for i in range(len(triclinic))])
    triclinic.rattle(0.1, seed=2)
    rng = np.random.default_rng(3)
    positions = 2.5 * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]], dtype=float)
    cluster = Atoms([symbols[i % len(symbols)] for i in range(6)], positions=positions + 0.1 * rng.normal(size=(6, 3)))
    return {"cubic": cubic, "triclinic": triclinic, "cluster": cluster}


def plain(atoms):
    return dict(symbols=atoms.get_chemical_symbols(), positions=atoms.positions.tolist(), cell=atoms.cell[:].tolist(),
                pbc=atoms.pbc.tolist())  # fmt: skip


def their_side(package: str, frames_json: str) -> None:
    """In the other release's venv: its ModelFromPackage on its own data dictionaries."""
    import torch
    from ase import Atoms

    from nequip.data import from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.model import ModelFromPackage
    from nequip.utils.global_state import set_global_state

    set_global_state()  # as its own tools do: float64 positions and cells
    model = ModelFromPackage(package, compile_mode="eager")["sole_model"].eval()
    metadata = model.metadata
    type_names = metadata["type_names"].split(" ")
    cutoffs = None
    if "per_edge_type_cutoff" in metadata:  # FILE_CONTRACT §2: row-major, row = center type
        flat = iter(float(word) for word in metadata["per_edge_type_cutoff"].split(" "))
        cutoffs = {center: {neighbor: next(flat) for neighbor in type_names} for center in type_names}
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(model_type_names=type_names),
        NeighborListTransform(r_max=float(metadata["r_max"]), per_edge_type_cutoff=cutoffs, type_names=type_names),
    ]
    results = {"model": f"{type(model).__module__}.{type(model).__name__}", "metadata": metadata, "frames": {}}
    for name, stored in json.loads(frames_json).items():
        data = from_ase(Atoms(stored["symbols"], positions=stored["positions"], cell=stored["cell"], pbc=stored["pbc"]))
        for transform in transforms:
            data = transform(data)
        out = model(data)
        results["frames"][name] = {
            key: out[key].detach().to(torch.float64).numpy().tolist() for key in QUANTITIES if key in out
        }
    print(json.dumps(results))


def our_side(package: Path) -> dict:
    from nequip.data import TypeMapper, from_ase
    from nequip.load import load_model, read_package_metadata

    model = load_model(package)
    by_name = frames(model.type_names, model.r_max)
    result = subprocess.run(
        [str(REFERENCE_PYTHON), __file__, "--their-side", str(package), json.dumps({k: plain(a) for k, a in by_name.items()})],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    report = {"package": str(package), "format": read_package_metadata(package)["package_format_version"],
              "their_model": theirs["model"], "frames": {}}  # fmt: skip
    for name, atoms in by_name.items():
        cutoffs = model.config["per_edge_type_cutoff"]
        matrix = None if cutoffs is None else np.reshape(cutoffs, (len(model.type_names),) * 2)
        ours = model(from_ase(atoms, TypeMapper(model.type_names), model.r_max, per_edge_type_cutoff=matrix, labels=()))
        errors = {}
        for key in QUANTITIES:
            mine = ours[key].detach().numpy().reshape(-1)
            if key == "stress" and not atoms.pbc.any():
                continue
            other = np.asarray(theirs["frames"][name][key]).reshape(-1)
            errors[key] = float(np.abs(mine - other).max() / np.abs(mine).max())
        report["frames"][name] = errors
    report["largest_relative_error"] = max(e for frame in report["frames"].values() for e in frame.values())
    return report


def main():
    if sys.argv[1:2] == ["--their-side"]:
        their_side(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="a package of ours (*.nequip.zip)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = our_side(args.package)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
