"""A compiled file damaged on disk or edited by hand is refused before anything of it is used
(its native code least of all), with one message, by every front end: the runtime's Model, ASE
and nequip-test here, LAMMPS in tests/lammps/test_lammps_errors.py. The runtime checks every
record's zip CRC-32 and the content hash nequip-compile records; files without the hash (of
other producers, or older versions: FILE_CONTRACT §4) still load, their CRCs checked."""

import hashlib
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from fixtures.edited_files import (
    edited_keeping_the_hash,
    library_record,
    with_library_zeroed,
    without_content_hash,
)
from nequip._runtime import CONTENT_HASH_RECORD, Model, ModelFileError, content_hash, read_metadata
from nequip.ase import NequIPCalculator
from runtime_cases import random_frames

PT2 = ("float64", "aotinductor", "pair_nequip")
PTH = ("float64", "torchscript", None)

HASH_MISMATCH = f"its content does not match the content hash recorded when it was compiled, record '{CONTENT_HASH_RECORD}'"


def damaged(path, detail: str) -> str:
    return f"{path}: the file is damaged or was edited after it was written ({detail}): compile it again"


def raises(exception, message: str):
    return pytest.raises(exception, match="^" + re.escape(message) + "$")


@pytest.fixture(scope="module", params=["library-zeroed-stale-crc", "library-zeroed", "type-names-edited", "r-max-edited"])
def broken(request, compiled_models, tmp_path_factory):
    """(path, message) of a .pt2 damaged or edited as issue 33 found them: 200 KB of the native
    library zeroed with the zip's CRC left stale or made consistent, type_names swapped, r_max
    changed (the last two with consistent CRCs)."""
    source = compiled_models[PT2]
    path = tmp_path_factory.mktemp("broken") / "model.nequip.pt2"
    if request.param == "library-zeroed-stale-crc":
        with_library_zeroed(source, path, stale_crc=True)
        record = library_record(source).split("/", 1)[1]
        return path, damaged(path, f"its record '{record}' fails its zip checksum")
    if request.param == "library-zeroed":
        with_library_zeroed(source, path, stale_crc=False)
    elif request.param == "type-names-edited":
        edited_keeping_the_hash(source, path, "type_names", "C Si")
    else:
        edited_keeping_the_hash(source, path, "r_max", "3.0")
    return path, damaged(path, HASH_MISMATCH)


@pytest.mark.parametrize("key", [PTH, PT2], ids=["pth", "pt2"])
def test_compiled_files_record_the_hash_of_their_content(compiled_models, key):
    """The record holds "sha256:" and the SHA-256 of every other record (name, a zero byte, the
    sizes of name and record as 8-byte little-endian integers, the bytes), in name order."""
    path = compiled_models[key]
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        top = archive.namelist()[0].split("/")[0]
        names = sorted(name.split("/", 1)[1] for name in archive.namelist())
        assert CONTENT_HASH_RECORD in names
        for name in names:
            if name != CONTENT_HASH_RECORD:
                data = archive.read(f"{top}/{name}")
                digest.update(name.encode() + b"\0" + struct.pack("<QQ", len(name.encode()), len(data)) + data)
        recorded = archive.read(f"{top}/{CONTENT_HASH_RECORD}").decode()
    assert recorded == "sha256:" + digest.hexdigest() == content_hash(str(path))


def test_the_runtime_refuses_a_damaged_or_edited_file(broken):
    path, message = broken
    with raises(ModelFileError, message):
        Model(str(path))
    with raises(ModelFileError, message):
        read_metadata(str(path))


def test_ase_refuses_a_damaged_or_edited_file(broken):
    path, message = broken
    with raises(ModelFileError, message):
        NequIPCalculator(path)


def labelled_data(path: Path) -> Path:
    atoms = bulk("SiC", "zincblende", a=4.36)
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0, forces=np.zeros((len(atoms), 3)))
    write(path, atoms, format="extxyz")
    return path


def test_nequip_test_refuses_a_damaged_or_edited_file(broken, tmp_path):
    path, message = broken
    output = tmp_path / "out"
    data = labelled_data(tmp_path / "data.xyz")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "nequip-test"), str(path), str(data), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"nequip-test: error: {message}\n")
    assert not output.exists()


def test_an_edited_pth_is_refused(compiled_models, tmp_path):
    path = edited_keeping_the_hash(compiled_models[PTH], tmp_path / "model.nequip.pth", "r_max", "3.0")
    with raises(ModelFileError, damaged(path, HASH_MISMATCH)):
        Model(str(path))


def test_a_file_without_the_hash_loads_and_computes_the_same(compiled_models, tmp_path):
    """Files of other producers and of older versions carry no content hash: still read."""
    path = without_content_hash(compiled_models[PT2], tmp_path / "model.nequip.pt2")
    with zipfile.ZipFile(path) as archive:
        assert not any(name.endswith(CONTENT_HASH_RECORD) for name in archive.namelist())
    frame = random_frames(3, seed=1)[2]
    args = (frame["pos"], frame["atom_types"], frame["edge_index"], frame["edge_cell_shift"], frame["cell"])
    expected = Model(str(compiled_models[PT2])).compute(*args)
    got = Model(str(path)).compute(*args)
    # the same native code: equal up to the order of threaded sums
    np.testing.assert_allclose(got["total_energy"], expected["total_energy"], rtol=1e-12)
    np.testing.assert_allclose(got["forces"], expected["forces"], rtol=0, atol=1e-12)


def test_a_file_without_the_hash_still_has_its_checksums_checked(compiled_models, tmp_path):
    source = without_content_hash(compiled_models[PT2], tmp_path / "unhashed.nequip.pt2")
    path = with_library_zeroed(source, tmp_path / "model.nequip.pt2", stale_crc=True)
    record = library_record(source).split("/", 1)[1]
    with raises(ModelFileError, damaged(path, f"its record '{record}' fails its zip checksum")):
        Model(str(path))
