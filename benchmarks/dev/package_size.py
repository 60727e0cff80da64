"""Package size and build time for the benchmark model (DESIGN.md).

    .venv/bin/python benchmarks/dev/package_size.py --repeats 3 --json package_size.json

The source is a checkpoint in ``nequip-train``'s layout (``state_dict`` and ``hyper_parameters``
of ``NequIPLightningModule``, no optimiser state) holding the benchmark model with random
weights (size and speed do not depend on them); its training data is one 64-atom 3C-SiC frame,
which becomes the package's example frame. Build time is measured with and without the
verification step (loading the package back and comparing predictions), each the median of
``--repeats`` builds; the size is broken down by what the archive entries hold.
"""

import argparse
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import ase.io
import torch

from nequip.benchmark import BENCHMARK_MODEL_CONFIG, benchmark_model, machine_description, sic_supercell
from nequip.package import ModelFromPackage, build_package
from nequip.train.config import config_to_dict, validate_config
from nequip.train.lightning_module import NequIPLightningModule


def write_checkpoint(directory: Path) -> Path:
    """A checkpoint of the benchmark model, as ``nequip-train`` lays it out."""
    data = directory / "sic.xyz"
    ase.io.write(data, sic_supercell(64), format="extxyz")
    model = benchmark_model()
    config = validate_config(
        {
            "output_dir": str(directory),
            "data": {"type_names": model.type_names, "file": str(data), "split": {"train": 1, "val": 0}},
            "model": {name: value for name, value in model.config.items() if name != "type_names"},
            "ema": None,
        }
    )
    module = NequIPLightningModule(model_config=model.config, config=config_to_dict(config))
    module.model.load_state_dict(model.state_dict())
    path = directory / "benchmark.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def median_build_seconds(checkpoint: Path, output: Path, repeats: int, verify: bool) -> dict:
    """Median wall-clock and CPU (this process) seconds of a build; CPU time is the steadier
    figure on a machine shared with other work."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        build_package(checkpoint, output, verify=verify)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def size_breakdown(package: Path) -> dict:
    """Bytes (uncompressed; torch.package stores entries uncompressed) by what the entries hold."""
    sizes = {"weights": 0, "model_pickle": 0, "interned_code": 0, "mocks": 0, "example_data": 0, "metadata": 0}
    sizes["other"] = 0
    with zipfile.ZipFile(package) as archive:
        for info in archive.infolist():
            name = info.filename.partition("/")[2]
            if name.startswith(".data/") and name.endswith(".storage"):
                kind = "weights"
            elif name.startswith("model/") and name.endswith(".pkl"):
                kind = "model_pickle"
            elif name.startswith(("nequip/", "e3nn/")) and name.endswith(".py"):
                kind = "interned_code"
            elif name.endswith(".py"):
                kind = "mocks"
            elif name == "model/example_data.pt":
                kind = "example_data"
            elif name in ("model/metadata.yaml", "model/config.yaml"):
                kind = "metadata"
            else:
                kind = "other"
            sizes[kind] += info.file_size
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = write_checkpoint(tmp)
        package = tmp / "benchmark.nequip.zip"
        build = median_build_seconds(checkpoint, package, args.repeats, verify=True)
        build_unverified = median_build_seconds(checkpoint, package, args.repeats, verify=False)
        start = time.perf_counter()
        model = ModelFromPackage(package)
        load_s = time.perf_counter() - start
        with zipfile.ZipFile(package) as archive:
            num_entries = len(archive.infolist())
        size = package.stat().st_size
        breakdown = size_breakdown(package)

    parameters = sum(p.numel() for p in model.parameters())
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report = dict(
        benchmark="package size and build time",
        model=BENCHMARK_MODEL_CONFIG,
        repeats=args.repeats,
        machine=machine_description(),
        results=dict(
            package_bytes=size,
            entries=num_entries,
            bytes_by_content=breakdown,
            parameters=parameters,
            parameter_bytes=parameter_bytes,
            build=build,
            build_without_verification=build_unverified,
            first_load_s=load_s,
        ),
    )
    print(f"package: {size / 1e6:.2f} MB ({size:,} bytes, {num_entries} entries)")
    for kind, nbytes in breakdown.items():
        print(f"  {kind:<14} {nbytes:>10,} bytes")
    print(f"parameters: {parameters:,} ({parameter_bytes:,} bytes)")
    print(
        f"build (median of {args.repeats}): {build['wall_s']:.2f} s wall, {build['cpu_s']:.2f} s CPU; "
        f"without verification {build_unverified['wall_s']:.2f} s wall, {build_unverified['cpu_s']:.2f} s CPU"
    )
    print(f"first load in a process: {load_s:.2f} s")
    print(f"torch threads: {torch.get_num_threads()} of {machine_description()['cores']} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
