"""Training data: files read by ASE, split, and served as batches of frame dictionaries."""

import hashlib
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


class NequIPDataModule(L.LightningDataModule):
    """Train / val / (test) datasets of one configuration's ``data`` section.

    Args:
        config: the ``data`` section.
        type_names, r_max, per_edge_type_cutoff: of the model (they decide the types and the
            neighbour lists).
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
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        batch_size = self.config.batch_size if split == "train" else (self.config.val_batch_size or self.config.batch_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochSeededRandomSampler(dataset, self.seed) if shuffle else None,
            collate_fn=AtomicDataset.collate_fn,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


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
