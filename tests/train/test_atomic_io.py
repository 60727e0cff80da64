"""Atomic writes (nequip.utils.atomic_io): a failure names the file, and leaves no temporary file."""

import pytest

from nequip.utils.atomic_io import WriteError, atomic_open, atomic_path, remove_stale_temporaries


def test_a_write_that_cannot_start_names_the_target(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    with pytest.raises(WriteError) as error:
        with atomic_open(blocker / "config.yaml") as f:
            f.write("never")
    assert str(error.value) == f"cannot write {blocker / 'config.yaml'}: Not a directory"


def test_a_rename_that_fails_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "last.ckpt"
    target.mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(WriteError) as error:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"weights")
    assert str(error.value) == f"cannot write {target}: Is a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_other_errors_pass_through_and_leave_no_temporary_file(tmp_path):
    with pytest.raises(KeyError):
        with atomic_open(tmp_path / "metrics.json") as f:
            f.write("{")
            raise KeyError("forces")
    assert list(tmp_path.iterdir()) == []


def test_only_temporaries_of_atomic_writes_are_removed_as_stale(tmp_path):
    stale = [tmp_path / ".best.ckpt.k3x_9q2a.tmp", tmp_path / ".config.yaml.abcdefgh.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "best.ckpt"]
    for path in stale + kept:
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
