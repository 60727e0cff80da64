"""The models of a package compiled side by side: the calling process and helper processes take
them from one queue (nequip.compile.compile_workers). Every pair_nequip_domain file of the
suite is compiled this way where the machine has two CPUs; here, the queue's own promises."""

import json
import os
import subprocess
import sys

import pytest
import torch

from torch._inductor.package import load_package

from nequip.compile import check_arguments, compile_workers
from nequip.compile.aotinductor import INDUCTOR_CONFIGS
from nequip.utils import torch_internals


def test_the_number_of_processes_is_the_cpus_or_the_variable(monkeypatch):
    monkeypatch.delenv(compile_workers.WORKERS_VARIABLE, raising=False)
    assert compile_workers.compile_processes() == max(1, min(len(os.sched_getaffinity(0)), 4))
    monkeypatch.setenv(compile_workers.WORKERS_VARIABLE, "3")
    assert compile_workers.compile_processes() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(compile_workers.WORKERS_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"NEQUIP_COMPILE_WORKERS must be .* at least 1, not '{bad}'"):
            compile_workers.compile_processes()


def test_a_helper_answers_a_failed_compile_and_ends_with_its_input(tmp_path):
    request = {"program": str(tmp_path / "missing.pt2"), "options": {}, "tf32": [False, False]}
    result = subprocess.run(
        [sys.executable, "-m", "nequip.compile.compile_workers"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (answer,) = [json.loads(line) for line in result.stdout.splitlines()]  # one answer, nothing else
    assert set(answer) == {"error"}
    assert "missing.pt2" in answer["error"]


class Scaled(torch.nn.Module):
    def __init__(self, name: str, scale: float):
        super().__init__()
        self.name = name  # the models of a package share one namespace of weights
        setattr(self, name, torch.nn.Parameter(torch.tensor(scale)))

    def forward(self, x):
        return (x.sin() * getattr(self, self.name)).sum(dim=1)


def test_programs_compiled_in_two_processes_run_as_their_models(tmp_path):
    rows = torch.export.Dim("rows", min=1)
    models = {"first": Scaled("first_scale", 2.0), "second": Scaled("second_scale", -3.0)}
    programs = {
        name: torch.export.export(model, (torch.randn(5, 4),), dynamic_shapes=({0: rows},))
        for name, model in models.items()
    }
    messages = []
    options = {**INDUCTOR_CONFIGS, "aot_inductor.package": True}
    files = compile_workers.compile_programs(programs, options, messages.append, processes=2)

    assert set(files) == set(programs)
    # the first in this process, the second in the helper (their messages in either order)
    assert sorted(messages) == ["compiling C++ of first (AOTInductor)",
                                "compiling C++ of second (AOTInductor, compile process 1)"]  # fmt: skip
    package = tmp_path / "two.pt2"
    with open(package, "wb") as file:
        torch_internals.aoti_package(file, files)
    x = torch.randn(7, 4)
    for name, model in models.items():
        loaded = load_package(str(package), model_name=name)  # torch's reader, for the bare models
        torch.testing.assert_close(loaded(x), model(x).detach())


def test_a_bad_number_of_processes_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv(compile_workers.WORKERS_VARIABLE, "many")
    out = tmp_path / "m.nequip.pt2"
    with pytest.raises(ValueError, match="NEQUIP_COMPILE_WORKERS must be"):
        check_arguments(out, "aotinductor", "cpu", "pair_nequip_domain")
    check_arguments(out, "aotinductor", "cpu", "ase")  # one model: the variable is not read
