"""A Cu dimer closer than any training frame: a trained model with ZBL, the same weights
without it, and EMT (the potential the model learned), at a few distances.

    .venv/bin/python benchmarks/zbl_dimer.py build/zbl_cascade/run/best.ckpt

The checkpoint is a model with ZBL (benchmarks/zbl_cascade.py trains one); "without" is the
same weights with ``zbl`` taken out of the model config (zbl_cascade.without_zbl).
"""

import argparse
import importlib.util
from pathlib import Path

import ase
from ase.calculators.emt import EMT

from nequip.ase import NequIPCalculator

HERE = Path(__file__).resolve().parent


def zbl_cascade():
    spec = importlib.util.spec_from_file_location("zbl_cascade", HERE / "zbl_cascade.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--distances", type=float, nargs="+", default=[0.5, 0.8, 1.2, 1.6, 2.0, 2.5])
    args = parser.parse_args(argv)
    plain = zbl_cascade().without_zbl(args.checkpoint, args.checkpoint.with_name("without_zbl_dimer.ckpt"))
    calculators = {"with ZBL": NequIPCalculator(args.checkpoint), "without": NequIPCalculator(plain), "EMT": EMT()}
    print(f"{'r (Å)':>6s}" + "".join(f"{name + ' (eV)':>16s}" for name in calculators))
    for r in args.distances:
        energies = []
        for calculator in calculators.values():
            dimer = ase.Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]], cell=[20, 20, 20], pbc=False)
            dimer.calc = calculator
            energies.append(dimer.get_potential_energy())
        print(f"{r:6.2f}" + "".join(f"{e:16.3f}" for e in energies))


if __name__ == "__main__":
    main()
