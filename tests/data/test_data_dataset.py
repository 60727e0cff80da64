import re
import zipfile

import ase.io
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nequip.data import AtomicDataset, TypeMapper, keys, read_frames


def test_read_frames_selects_by_index(aspirin_path):
    assert len(read_frames(aspirin_path)) == 15
    frames = read_frames(aspirin_path, index="2:5")
    assert len(frames) == 3 and all(len(atoms) == 21 for atoms in frames)
    assert len(read_frames(aspirin_path, index="0")) == 1


def test_missing_file_is_reported(tmp_path):
    path = tmp_path / "absent.xyz"
    message = f"structure file {path} does not exist; check the path"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        read_frames(path)


def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\nan xyz file\n")
    with pytest.raises(ValueError, match=re.escape(f"could not read structures from {path}: ")):
        read_frames(path)


def test_file_without_requested_labels_names_the_frame_and_label(tmp_path, make_atoms, si_c_mapper):
    path = tmp_path / "no_forces.xyz"
    frames = [make_atoms(seed) for seed in range(2)]
    frames[1].calc.results.pop("forces")
    ase.io.write(path, frames)
    formula = frames[1].get_chemical_formula()
    message = f"{path}: frame 1: structure {formula} has no forces label; add it to the data"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AtomicDataset.from_file(path, si_c_mapper, 4.0, require_labels=True)


def test_errors_number_frames_by_their_position_in_the_file(tmp_path, make_atoms, si_c_mapper):
    path = tmp_path / "nan.xyz"
    frames = [make_atoms(seed) for seed in range(4)]
    frames[2].calc.results["energy"] = np.nan
    ase.io.write(path, frames)
    message = f"{path}: frame 2: label 'total_energy' is not finite (nan); fix or remove the frame"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AtomicDataset.from_file(path, si_c_mapper, 4.0)
    # a selection keeps the numbers of the file
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AtomicDataset.from_file(path, si_c_mapper, 4.0, index="1:")
    assert len(AtomicDataset.from_file(path, si_c_mapper, 4.0, index="3")) == 1


@pytest.mark.parametrize(
    "name, kind",
    [
        ("best.ckpt", "a training checkpoint"),
        ("model.nequip.zip", "a model package"),
        ("model.nequip.pt2", "a compiled model"),
        ("frames.zip", "a zip archive"),
    ],
)
def test_model_files_are_not_taken_for_structures(tmp_path, name, kind):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"weights")
    message = (
        f"{path} is {kind}, not a file of structures; give structures with their labels"
        " in a format ASE reads (e.g. extxyz)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_frames(path)


def test_unknown_format_names_the_format_and_where_to_find_valid_ones(aspirin_path, tmp_path):
    message = (
        "format 'extxy' is not a format ASE can read; did you mean 'extxyz'? give an ASE format name"
        " (e.g. 'extxyz'; `ase info --formats` lists them)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_frames(aspirin_path, format="extxy")
    unguessable = tmp_path / "frames.yaml"
    unguessable.write_text("a: 1\n")
    message = (
        f"could not read structures from {unguessable}: ASE cannot tell its format from the file's name"
        " or contents; give the ASE format name (e.g. 'extxyz'; `ase info --formats` lists them)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_frames(unguessable)


def test_dataset_from_file_keeps_neighbor_lists_and_batches(aspirin_path):
    dataset = AtomicDataset.from_file(
        aspirin_path,
        TypeMapper(["C", "H", "O"]),
        4.0,
        labels=(keys.TOTAL_ENERGY, keys.FORCES),
        require_labels=True,
    )
    assert len(dataset) == 15
    assert dataset[4][keys.EDGE_INDEX].shape[1] > 0
    loader = DataLoader(dataset, batch_size=4, collate_fn=AtomicDataset.collate_fn)
    first = next(iter(loader))
    assert first[keys.NUM_ATOMS].tolist() == [21] * 4
    assert first[keys.TOTAL_ENERGY].shape == (4, 1)
    assert sum(batch[keys.NUM_ATOMS].numel() for batch in loader) == 15


def test_dataset_from_dicts_requires_geometry():
    frame = {keys.POS: torch.zeros(2, 3), keys.ATOM_TYPES: torch.zeros(2, dtype=torch.int64)}
    message = "frame 0 lacks ['edge_index']; build frames with from_ase, which adds them"
    with pytest.raises(ValueError, match=re.escape(message)):
        AtomicDataset([frame])


def test_read_frames_names_an_index_past_the_last_frame(tmp_path):
    from ase.build import bulk

    path = tmp_path / "two.xyz"
    ase.io.write(path, [bulk("Cu", "fcc", a=3.6)] * 2, format="extxyz")
    with pytest.raises(ValueError) as error:
        read_frames(path, index=100)
    assert str(error.value) == f"could not read structures from {path}: no frame at index 100"


def test_an_empty_file_is_named_empty_whatever_its_format(tmp_path):
    empty = tmp_path / "train.xyz"
    empty.write_bytes(b"")
    for format in (None, "extxyz"):
        with pytest.raises(ValueError) as error:
            read_frames(empty, format=format)
        assert str(error.value) == f"{empty} is empty; give a file of structures with their labels (e.g. extxyz)"
    blank = tmp_path / "blank.xyz"
    blank.write_text("\n\n")
    with pytest.raises(ValueError) as error:
        read_frames(blank)
    assert str(error.value) == f"could not read structures from {blank}: it holds none"
