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
            neighbor lists).
        labels: the labels read (``total_energy``, ``forces``, ``stress``). A frame that lacks
            one carries NaN in its place, which the loss and the metrics leave out
            (:func:`nequip.train.metrics.labelled_rows`); :meth:`label_counts` says how many
            frames have each.
        seed: shuffling seed of the training batches.

    Every frame also carries its loss weights: ``frame_weight`` (1,), from
    ``data.frame_weight_key`` and ``data.config_type_weights``, and ``force_weight`` (N,), from
    ``data.force_weight_key``; a frame without the key (or of a config type not listed) weighs
    1, but a key or config type that no training frame has is refused (a misspelt name).
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
        config_types, weighted = set(), {"frame_weight_key": 0, "force_weight_key": 0}
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
            )
            # before the labels a frame lacks are filled in (NaN)
            check_labels_can_be_learned(dataset.frames, path, numbers)
            for frame, atoms, number in zip(dataset.frames, frames, numbers):
                for label in self.labels:
                    if label not in frame:
                        frame[label] = torch.full(_label_shape(label, len(atoms)), float("nan"), dtype=torch.float64)
                try:
                    frame.update(self._loss_weights(atoms))
                except ValueError as err:
                    raise ValueError(f"{path}: frame {number}: {err}") from None
                config_types.add(atoms.info.get("config_type"))
                if split == "train":
                    weighted["frame_weight_key"] += self.config.frame_weight_key in atoms.info
                    weighted["force_weight_key"] += self.config.force_weight_key in atoms.arrays
            self.datasets[split] = dataset
        for key, count in weighted.items():
            if getattr(self.config, key) is not None and count == 0:
                where = "info" if key == "frame_weight_key" else "per-atom array"
                raise ConfigError(
                    f"data.{key}: no training frame has the {where} {getattr(self.config, key)!r}; "
                    "give the name the data uses"
                )
        unknown = sorted(set(self.config.config_type_weights or {}) - config_types)
        if unknown:
            known = ", ".join(sorted(str(t) for t in config_types if t is not None)) or "none"
            raise ConfigError(
                f"data.config_type_weights: no frame has config_type {', '.join(map(repr, unknown))} "
                f"(the frames' config types: {known}); give config types of the data (atoms.info['config_type'])"
            )

    def _loss_weights(self, atoms) -> Dict[str, torch.Tensor]:
        """``frame_weight`` (1,) and ``force_weight`` (N,) of one frame, float64 (see the class docstring)."""
        config = self.config
        weight = 1.0
        if config.frame_weight_key in atoms.info:
            weight = _weight_value(atoms.info[config.frame_weight_key], f"info[{config.frame_weight_key!r}]",
                                   "data.frame_weight_key")  # fmt: skip
        if config.config_type_weights is not None:
            weight *= config.config_type_weights.get(atoms.info.get("config_type"), 1.0)
        force_weight = np.ones(len(atoms))
        if config.force_weight_key in atoms.arrays:
            where = f"per-atom array {config.force_weight_key!r}"
            values = np.asarray(atoms.arrays[config.force_weight_key], dtype=np.float64).reshape(len(atoms), -1)
            if values.shape[1] != 1 or not (np.isfinite(values).all() and (values >= 0).all()):
                raise ValueError(f"its {where} must hold one finite number >= 0 per atom (data.force_weight_key)")
            force_weight = values[:, 0]
        return {
            keys.FRAME_WEIGHT: torch.tensor([weight], dtype=torch.float64),
            keys.FORCE_WEIGHT: torch.from_numpy(force_weight.copy()),
        }

    def label_counts(self, split: str = "train") -> Dict[str, int]:
        """How many frames of ``split`` have each of the labels read."""
        return {label: sum(_has_label(frame, label) for frame in self.datasets[split].frames) for label in self.labels}

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
        """Training-data statistics that initialise a model (in eV and Å), each over the frames
        that have its label; None where no frame has it."""
        train = self.datasets["train"].frames
        with_energy = [frame for frame in train if _has_label(frame, keys.TOTAL_ENERGY)]
        with_forces = [frame for frame in train if _has_label(frame, keys.FORCES)]
        num_types = self.type_mapper.num_types
        return {
            "avg_num_neighbors": statistics.average_num_neighbors(train),
            "per_type_energy_shifts": statistics.per_type_energy_shifts(with_energy, num_types).tolist()
            if with_energy
            else None,
            "force_rms": statistics.force_rms(with_forces) if with_forces else None,
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


def _label_shape(label: str, num_atoms: int) -> Tuple[int, ...]:
    return {keys.TOTAL_ENERGY: (1, 1), keys.FORCES: (num_atoms, 3), keys.STRESS: (1, 3, 3)}[label]


def _has_label(frame, label: str) -> bool:
    """Whether a training frame has ``label`` (one it lacks is NaN: see NequIPDataModule)."""
    return label in frame and bool(torch.isfinite(frame[label]).all())


def _weight_value(value, where: str, key: str) -> float:
    if isinstance(value, (bool, str)) or not np.isscalar(value) or not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{where} must be a finite number >= 0 ({key}), got {getattr(value, 'item', lambda: value)()!r}")
    return float(value)


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
