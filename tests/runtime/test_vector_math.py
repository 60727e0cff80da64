"""oneMKL's vector-math kernels are chosen on one thread before any model runs
(cpp/src/vector_math.cpp): a first call of sin, sqrt, ... on several threads at once can give one
thread a low-accuracy kernel for its chunk (pytorch/pytorch#188792; seen here as a first energy
1.3e-5 eV per atom off on 2 threads, in about one fresh process in eight).

The race itself needs a fresh process and luck to show, too slow to catch in the suite; these
tests check what prevents it: that the runtime library settles every function torch computes
with oneMKL, and that whatever runs a model loads that library first."""

import re
import subprocess
import sys
from pathlib import Path

import torch

import nequip._kernels


def functions_torch_computes_with_onemkl():
    """The functions ATen/cpu/vml.h implements with oneMKL (its IMPLEMENT_VML_MKL lines that are
    not commented out), from the headers of the installed torch."""
    header = Path(torch.__file__).parent / "include" / "ATen" / "cpu" / "vml.h"
    assert header.is_file(), f"the installed torch has no {header}"
    lines = header.read_text().splitlines()
    return {m.group(1) for line in lines if (m := re.match(r"\s*IMPLEMENT_VML_MKL\((\w+),", line))}


def test_every_function_torch_computes_with_onemkl_is_settled():
    onemkl = functions_torch_computes_with_onemkl()
    assert {"sin", "sqrt", "exp"} <= onemkl  # the header was read
    assert set(nequip._kernels.vector_math_functions) == onemkl


def test_a_model_class_loads_the_runtime_library_first():
    # a fresh process: importing the message passing (every model class does) loads the library
    # before any model can run
    code = "import sys, nequip.nn.message_passing; print('nequip._kernels' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
