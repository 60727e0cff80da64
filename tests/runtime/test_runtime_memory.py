"""A compiled model's call reuses the large blocks its previous call freed
(cpp/src/call_memory.cpp): no fresh pages to fault in and zero, the same numbers as from fresh
memory, and no more peak memory than the largest call needs; so do the layer-by-layer parts of a
domain file, whose call frees a block per part. Large blocks are advised into transparent huge
pages.

The calls run in a fresh process, so that page faults and peak RSS are the model's alone. The
reuse is counted in page faults with huge pages turned off for that process (a huge page is one
fault for 512 pages)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from fixtures.compiled import R_MAX, TYPE_NAMES
from nequip.data import TypeMapper, from_ase
from runtime_cases import assert_matches, eager_outputs

# 1728 atoms and 216 atoms of rattled 3C-SiC: the tiny float64 model's buffers of one call are
# about 50 MiB and 6 MiB.
LARGE, SMALL = 6, 3
# the order of calls: the large system, the small one, the large one again
SEQUENCE = (LARGE, LARGE, LARGE, SMALL, SMALL, LARGE, LARGE, LARGE)

CALLS = r"""
import ctypes, json, resource, sys
import numpy as np
from nequip._runtime import Model
path, frames, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
if sys.argv[5] == "no-huge-pages":
    assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE
def huge_kib():
    rollup = open("/proc/self/smaps_rollup").read()
    return int(rollup.split("AnonHugePages:")[1].split()[0])
model = Model(path)
rows, results = [], {}
for index, repeat in enumerate(json.loads(sys.argv[4])):
    f = {k: frames[f"{repeat}_{k}"] for k in ("pos", "atom_types", "edge_index", "edge_cell_shift", "cell")}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if sys.argv[6] == "whole":
        got = model.compute(f["pos"], f["atom_types"], f["edge_index"], f["edge_cell_shift"], f["cell"])
    else:  # every atom owned: the parts of several ranks' runs, exchanging nothing
        owner = np.arange(len(f["atom_types"]))
        got = model.compute_exchanging(f["pos"], f["atom_types"], f["edge_index"], owner, cell=f["cell"],
                                       edge_cell_shift=f["edge_cell_shift"])
    after = resource.getrusage(resource.RUSAGE_SELF)
    rows.append(dict(faults=after.ru_minflt - before, peak_kib=after.ru_maxrss, huge_kib=huge_kib()))
    for name in ("total_energy", "forces", "stress"):
        results[f"{index}_{name}"] = np.asarray(got[name])
np.savez(out, **results)
print(json.dumps(rows))
"""


def sic(repeat: int):
    atoms = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=repeat)
    frame = {k: v.numpy() for k, v in from_ase(atoms, TypeMapper(list(TYPE_NAMES)), R_MAX).items()}
    frame["cell"] = frame["cell"].reshape(3, 3)
    return frame


def run_calls(path, frames, directory, sequence, huge_pages: bool, side: str = "whole"):
    """(rows of faults, peak RSS and huge pages per call, outputs per call) of one process;
    side: the whole model (``Model.compute``) or its layer-by-layer parts."""
    np.savez(directory / "frames.npz", **{f"{r}_{k}": v for r, f in frames.items() for k, v in f.items()})
    result = subprocess.run(
        [sys.executable, "-c", CALLS, str(path), str(directory / "frames.npz"), str(directory / "out.npz"),
         json.dumps(sequence), "huge-pages" if huge_pages else "no-huge-pages", side],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    return rows, dict(np.load(directory / "out.npz"))


@pytest.fixture(scope="module")
def calls(compiled_models, tmp_path_factory):
    """(rows of faults and peak RSS per call, outputs per call, frames by repeat), huge pages off."""
    frames = {repeat: sic(repeat) for repeat in (LARGE, SMALL)}
    path = compiled_models["float64", "aotinductor", "ase"]
    rows, outputs = run_calls(path, frames, tmp_path_factory.mktemp("call_memory"), SEQUENCE, huge_pages=False)
    return rows, outputs, frames


@pytest.fixture(scope="module")
def calls_of_parts(compiled_models, tmp_path_factory):
    """As ``calls``, through the layer-by-layer parts of a domain file."""
    frames = {repeat: sic(repeat) for repeat in (LARGE, SMALL)}
    path = compiled_models["float64", "aotinductor", "pair_nequip_domain"]
    directory = tmp_path_factory.mktemp("call_memory_parts")
    rows, outputs = run_calls(path, frames, directory, SEQUENCE, huge_pages=False, side="parts")
    return rows, outputs, frames


@pytest.fixture(params=["whole", "parts"])
def calls_of(request):
    return request.getfixturevalue("calls" if request.param == "whole" else "calls_of_parts")


def test_a_repeated_call_faults_in_no_new_memory(calls_of, request):
    rows, _, _ = calls_of
    first = rows[0]["faults"]
    assert first * 4096 > 40 * 2**20, f"the first call faulted in only {first} pages: the test system is too small"
    # The whole model's one pool is reused from the second call on. The parts' blocks settle at
    # the third: the first call maps segments as its requests outgrow them, the second carves
    # the same requests from the merged free memory in another layout, and maps what it lacks.
    # After the small system's calls (which give back segments they did not use) the large one
    # settles again the same way: by the second call after them for the parts (a file whose
    # message passing calls the kernels allocates their outputs as blocks of their own).
    settled = (1, 2, 7) if "whole" in request.node.callspec.id else (2, 7)
    for index in settled:  # the large system after itself, and after the small one's calls
        assert rows[index]["faults"] < first / 20, (
            f"call {index} faulted in {rows[index]['faults']} pages, the first {first}: "
            "the buffers of the previous call were not reused"
        )


def test_the_peak_is_that_of_the_largest_call(calls_of):
    rows, _, _ = calls_of
    first = rows[0]
    # Keeping blocks no call uses, or glibc's heap keeping all freed memory, grows the peak by a
    # whole call's buffers; the small system's calls, run while the large blocks are kept, and
    # Python's own allocations add a few MiB.
    slack_kib = first["faults"] * 4 // 4
    assert rows[-1]["peak_kib"] <= first["peak_kib"] + slack_kib, [row["peak_kib"] for row in rows]


def test_reused_memory_gives_the_eager_numbers(calls_of, compiled_models):
    _, outputs, frames = calls_of
    eager = {repeat: eager_outputs(compiled_models.eager["float64"], frame) for repeat, frame in frames.items()}
    for index, repeat in enumerate(SEQUENCE):
        for name in ("total_energy", "forces", "stress"):
            assert_matches(outputs[f"{index}_{name}"], eager[repeat][name], "float64", f"call {index}: {name}")


def transparent_huge_pages() -> str:
    """The system's THP mode: always, madvise or never ("" where the kernel has none)."""
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = re.search(r"\[(\w+)\]", setting.read_text()) if setting.exists() else None
    return mode.group(1) if mode else ""


def test_large_blocks_are_advised_into_huge_pages(calls, compiled_models, tmp_path):
    rows_without, _, _ = calls
    # the control: in the process that turned them off, no huge pages at all
    assert all(row["huge_kib"] == 0 for row in rows_without), [row["huge_kib"] for row in rows_without]
    if transparent_huge_pages() not in ("madvise", "always"):
        pytest.skip(f"this kernel gives no transparent huge pages on advice ({transparent_huge_pages() or 'no THP'})")
    path = compiled_models["float64", "aotinductor", "ase"]
    rows, outputs = run_calls(path, {LARGE: sic(LARGE)}, tmp_path, (LARGE, LARGE), huge_pages=True)
    # In "madvise" mode (common, and this machine's) only the runtime's advice gives huge pages:
    # most of the call's ~50 MiB of buffers lies in them, kept for the second call.
    assert rows[0]["huge_kib"] >= 16 * 1024, rows
    assert rows[1]["huge_kib"] >= rows[0]["huge_kib"], rows
    eager = eager_outputs(compiled_models.eager["float64"], sic(LARGE))
    for index in range(2):
        for name in ("total_energy", "forces", "stress"):
            assert_matches(outputs[f"{index}_{name}"], eager[name], "float64", f"call {index} in huge pages: {name}")
