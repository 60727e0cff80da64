"""Training data: files read by ASE, split, and served as batches of frame dictionaries."""

import hashlib
import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..data import AtomicDataset, TypeMapper, keys, read_frames, statistics
from .config import ConfigError, DataConfig


class EpochSeededRandomSampler(RandomSampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same batches.

    A plain RandomSampler draws from the global RNG, whose state a checkpoint does not keep.
    Lightning calls ``set_epoch`` every epoch, and under DDP swaps this (a RandomSampler) for
    a DistributedSampler seeded the same way.
    """

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class SkippingDataLoader(DataLoader):
    """A DataLoader whose first pass starts ``skip_batches`` batches into its epoch.

    A run stopped mid-epoch (SIGTERM) resumes there: Lightning restores its count of the epoch's
    batches, and this loader leaves out the batches already trained on, so the resumed run sees
    the batches an uninterrupted one would. Later passes are whole epochs. The skipped batches
    are drawn and collated (frames in memory: cheap), not evaluated.
    """

    def __init__(self, *args, skip_batches: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_batches = skip_batches

    def __iter__(self):
        iterator = super().__iter__()
        skip, self.skip_batches = self.skip_batches, 0
        # lazy: the skip happens at the first batch, after Lightning has set the sampler's epoch
        return itertools.islice(iterator, skip, None) if skip else iterator


class NequIPDataModule(L.LightningDataModule):
    """Train / val / (test) datasets of one configuration's ``data`` section.

    Args:
        config: the ``data`` section.
        type_names, r_max, per_edge_type_cutoff: of the model (they decide the types and the
            neighbour lists).
        labels: which labels every frame must have (``total_energy``, ``forces``, ``stress``).
        seed: shuffling seed of the training batches.
    """

    def __init__(
        self,
        config: DataConfig,
        type_names: Sequence[str],
        r_max: float,
        per_edge_type_cutoff: Optional[Sequence[float]] = None,
        labels: Sequence[str] = (keys.TOTAL_ENERGY, keys.FORCES),
        seed: int = 0,
    ):
        super().__init__()
        self.config = config
        self.type_mapper = TypeMapper(list(type_names), config.species_to_type)
        self.r_max = r_max
        self.per_edge_type_cutoff = (
            None
            if per_edge_type_cutoff is None
            else np.asarray(per_edge_type_cutoff, dtype=np.float64).reshape(len(type_names), len(type_names))
        )
        self.labels = tuple(labels)
        self.seed = seed
        self.datasets: Dict[str, AtomicDataset] = {}
        # training batches of the first epoch that a run resumed mid-epoch has already done
        self.resume_after_batches = 0

    def setup(self, stage: Optional[str] = None) -> None:
        # the datasets are needed before the model exists (statistics), so this may run early;
        # reading the files once is enough
        if self.datasets:
            return
        for split, (path, numbers, frames) in self._read_splits().items():
            dataset = AtomicDataset.from_ase(
                frames,
                self.type_mapper,
                self.r_max,
                source=path,
                frame_numbers=numbers,
                per_edge_type_cutoff=self.per_edge_type_cutoff,
                energy_units_to_eV=self.config.energy_units_to_eV,
                length_units_to_A=self.config.length_units_to_A,
                labels=self.labels,
                require_labels=True,
            )
            check_labels_can_be_learned(dataset.frames, path, numbers)
            self.datasets[split] = dataset

    def _read(self, key: str) -> List:
        """The frames of the file that ``data.<key>`` names; a file that is not one is named by its key."""
        try:
            return read_frames(getattr(self.config, key), format=self.config.format)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"data.{key}: {err}") from None

    def _read_splits(self) -> Dict[str, Tuple[str, List[int], List]]:
        """Per split: the file, the frames' positions in it (for messages) and the frames."""
        config = self.config
        if config.file is None:
            keys_of_splits = {"train": "train_file", "val": "val_file"}
            if config.test_file is not None:
                keys_of_splits["test"] = "test_file"
            splits = {}
            for split, key in keys_of_splits.items():
                frames = self._read(key)
                splits[split] = (getattr(config, key), list(range(len(frames))), frames)
            return splits

        frames = self._read("file")
        split = config.split
        sizes = [split.train, split.val, split.test]
        if any(isinstance(size, float) for size in sizes):
            sizes = [int(round(size * len(frames))) for size in sizes]
        if sum(sizes) > len(frames):
            raise ConfigError(
                f"data.split: asks for {sizes[0]} + {sizes[1]} + {sizes[2]} frames but {config.file} has {len(frames)}"
            )
        for name, size in zip(("train", "val"), sizes):
            if size < 1:
                raise ConfigError(f"data.split.{name}: gives no frames (of {len(frames)} in {config.file})")
        order = np.random.default_rng(split.seed).permutation(len(frames))
        bounds = np.cumsum([0] + sizes)
        splits = {}
        for name, start, stop in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
            numbers = order[start:stop].tolist()
            if numbers:
                splits[name] = (config.file, numbers, [frames[i] for i in numbers])
        return splits

    @property
    def has_test_data(self) -> bool:
        return "test" in self.datasets

    def statistics(self) -> Dict[str, object]:
        """Training-data statistics that initialise a model (in eV and Å)."""
        train = self.datasets["train"].frames
        num_types = self.type_mapper.num_types
        return {
            "avg_num_neighbors": statistics.average_num_neighbors(train),
            "per_type_energy_shifts": statistics.per_type_energy_shifts(train, num_types).tolist(),
            "force_rms": statistics.force_rms(train),
            "closest_pair": statistics.shortest_edge_length(train),
        }

    def _loader(self, split: str, loader_class=DataLoader, **options) -> DataLoader:
        dataset = self.datasets[split]
        batch_size = self.config.batch_size if split == "train" else (self.config.val_batch_size or self.config.batch_size)
        return loader_class(
            dataset,
            batch_size=batch_size,
            collate_fn=AtomicDataset.collate_fn,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        return self._loader(
            "train",
            SkippingDataLoader,
            sampler=EpochSeededRandomSampler(dataset, self.seed),
            skip_batches=self.resume_after_batches,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# the largest label (in eV, Å) whose square, as the loss sums it in float64, is finite
_LARGEST_LABEL = math.sqrt(torch.finfo(torch.float64).max)
_UNITS = {keys.TOTAL_ENERGY: "eV", keys.FORCES: "eV/Å", keys.STRESS: "eV/Å³"}


def check_labels_can_be_learned(frames: Sequence[Dict[str, torch.Tensor]], source: str, numbers: Sequence[int]) -> None:
    """Refuse a label so large that its loss overflows (a squared error of more than float64 holds).

    Training would stop at its first step with an infinite loss, and the learning rate would
    look like the cause. Energies enter the loss per atom. Frames are named by ``numbers``,
    their positions in ``source``.
    """
    for number, frame in zip(numbers, frames):
        for label in (keys.TOTAL_ENERGY, keys.FORCES, keys.STRESS):
            if label not in frame:
                continue
            value = frame[label]
            learned = value.abs() / len(frame[keys.POS]) if label == keys.TOTAL_ENERGY else value.abs()
            if float(learned.max()) < _LARGEST_LABEL:
                continue
            unit = _UNITS[label]
            if label == keys.TOTAL_ENERGY:
                shown = f"{float(value):.6g} {unit} ({float(value) / len(frame[keys.POS]):.6g} {unit} per atom)"
            elif label == keys.FORCES:
                atom, component = divmod(int(learned.argmax()), 3)
                shown = f"{float(value[atom, component]):.6g} {unit} on atom {atom}"
            else:
                shown = f"{float(value.view(-1)[int(learned.argmax())]):.6g} {unit}"
            raise ValueError(
                f"{source}: frame {number}: label '{label}' is {shown}, too large to train on (its squared error"
                " in the loss overflows float64); fix or remove the frame, or check data.energy_units_to_eV"
            )


def data_fingerprints(config: DataConfig) -> Dict[str, Dict[str, str]]:
    """``{"data.file": {"path": ..., "sha256": ...}, ...}``: what a resumed run must find again."""
    fingerprints = {}
    for key in ("file", "train_file", "val_file", "test_file"):
        path = getattr(config, key)
        if path is None:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        fingerprints[f"data.{key}"] = {"path": str(path), "sha256": digest.hexdigest()}
    return fingerprints
