"""Every speed figure of the project is measured on this work (DESIGN.md, "The benchmark model
and systems"), so that figures can be compared across issues and implementations."""

import os
import platform
from typing import Dict

import ase
import ase.data
import numpy as np
import torch
from ase.build import bulk

BENCHMARK_MODEL_CONFIG = dict(
    type_names=["Si", "C"],
    r_max=5.0,
    l_max=2,
    parity=True,
    num_layers=4,
    num_features=32,
    num_bessels=8,
    polynomial_cutoff_p=6,
    radial_mlp_depth=2,
    radial_mlp_width=64,
    model_dtype="float32",
)

# 3C-SiC conventional cell (8 atoms) repeated n×n×n
SIZES = {64: 2, 512: 4, 4096: 8, 32768: 16}


def sic_supercell(num_atoms: int, seed: int = 0) -> ase.Atoms:
    """3C-SiC (zincblende, a = 4.36 Å) with ``num_atoms`` atoms, rattled by 0.05 Å (seeded), periodic."""
    if num_atoms not in SIZES:
        raise ValueError(f"benchmark systems have {sorted(SIZES)} atoms, not {num_atoms}")
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(SIZES[num_atoms])
    atoms.rattle(0.05, seed=seed)
    return atoms


def system_for(type_names, num_atoms: int, seed: int = 0) -> ase.Atoms:
    """The benchmark system for a model with these types: 3C-SiC for Si and C (DESIGN.md); for other
    species, a random fcc alloy of them with the same numbers of atoms (4-atom cells repeated
    2×2×4, 4×4×8, 8×8×16, 16×16×32), rattled by 0.05 Å."""
    if {"Si", "C"} <= set(type_names):
        return sic_supercell(num_atoms, seed)
    if num_atoms not in SIZES:
        raise ValueError(f"benchmark systems have {sorted(SIZES)} atoms, not {num_atoms}")
    n = SIZES[num_atoms]  # 4 n·n·2n = 8 n³ atoms, as for SiC
    species = [name for name in type_names if name in ase.data.atomic_numbers]
    if not species:
        raise ValueError(f"no chemical element among the model's types {list(type_names)} to build a system from")
    lattice = [ase.data.reference_states[ase.data.atomic_numbers[s]] or {} for s in species]
    fcc_a = [state.get("a", 4.0) if state.get("symmetry") == "fcc" else 4.0 for state in lattice]
    atoms = bulk(species[0], "fcc", a=float(np.mean(fcc_a)), cubic=True).repeat((n, n, 2 * n))
    atoms.symbols = np.random.default_rng(seed).choice(species, size=len(atoms))
    atoms.rattle(0.05, seed=seed)
    return atoms


def benchmark_model(seed: int = 0, **overrides):
    """The benchmark model with random weights (speed does not depend on them)."""
    from ..model import build_model

    config = dict(BENCHMARK_MODEL_CONFIG, avg_num_neighbors=40.0)
    config.update(overrides)
    return build_model(config, seed=seed).eval()


def machine_description() -> Dict[str, object]:
    """What a figure was measured on: CPU model, cores, torch threads, versions."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ase": ase.__version__,
    }
