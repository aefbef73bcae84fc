"""One Dataset for both sub-tasks, the class-balanced sampler, and :func:`create_loaders`.

Determinism: everything random in a training epoch (sampler order, crop decisions, augmentation) is seeded
from ``(seed, epoch)`` by :func:`seed_epoch`, so an epoch replays identically after a resume.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from fh_utils.data.augment import Transform, create_transforms
from fh_utils.data.cache import CachedSource, CacheParams, CropSpec, FileSource, cache_size_for, file_source_for
from fh_utils.data.config import DataConfig, as_data_config
from fh_utils.data.folds import make_split
from fh_utils.data.reader import BOX_COLUMNS, read_split
from fh_utils.paths import derived_dir
from fh_utils.tasks import Task, get_task


class FashionHowDataset(Dataset):
    """Rows of a validated split served as ``(uint8 image tensor, label tensor)``.

    Args:
        df: DataFrame from :func:`fh_utils.data.reader.read_split`.
        task: Task description.
        transform: Maps an RGB uint8 crop to a uint8 CHW tensor.
        source: Gives the crop of a row (:class:`FileSource` or :class:`CachedSource`).
        crop_prob: Probability of cropping to the box (1 = always; 0 = whole image). In evaluation the crop
            is deterministic: taken when ``crop_prob > 0``.
        train: Random crop decisions (training) or deterministic (evaluation).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        task: Task,
        transform: Transform,
        source: FileSource | CachedSource,
        crop_prob: float = 1.0,
        train: bool = False,
    ):
        self.df = df.reset_index(drop=True)
        self.task = task
        self.transform = transform
        self.source = source
        self.crop_prob = float(crop_prob)
        self.train = train
        if df.attrs.get("has_labels", True):
            self.targets = df[task.label_columns].to_numpy(dtype=np.int64, copy=True)
        else:
            self.targets = np.full((len(df), len(task.heads)), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.df)

    def _crop(self) -> bool:
        if self.crop_prob >= 1.0:
            return True
        if not self.train:
            return self.crop_prob > 0.0
        return bool(torch.rand(()) < self.crop_prob)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.source.get(index, self._crop())
        return self.transform(img), torch.from_numpy(self.targets[index])


def balanced_sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights 1 / (count of its class), as the seed's WeightedRandomSampler used."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return 1.0 / counts[labels]


def create_balanced_sampler(
    labels: np.ndarray, num_classes: int, generator: torch.Generator | None = None
) -> WeightedRandomSampler:
    """Class-balanced sampler: each class is drawn equally often in expectation (with replacement)."""
    weights = torch.as_tensor(balanced_sample_weights(labels, num_classes), dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**31  # derived from the loader's generator, hence from (seed, epoch)
    np.random.seed(seed)
    random.seed(seed)
    info.dataset.transform.set_seed(seed)


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed every RNG an epoch of ``loader`` uses from ``(seed, epoch)`` (call before iterating)."""
    epoch_seed = seed * 1000 + epoch
    torch.manual_seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    random.seed(epoch_seed)
    if loader.generator is not None:
        loader.generator.manual_seed(epoch_seed)
    transform = getattr(loader.dataset, "transform", None)
    if hasattr(transform, "set_seed"):  # any map-style dataset works; ours re-seeds its augmentation too
        transform.set_seed(epoch_seed)


def build_source(
    df: pd.DataFrame,
    img_size: int,
    crop_margin: float = 0.0,
    cache: bool = False,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    reduced_decode: bool = True,
) -> FileSource | CachedSource:
    """Image source of a split: the decode-once cache, or the files computing the same crops.

    Both paths give the same array for a row, bit for bit (decode at the cache's reduction, crop, resize to
    the cache side), so a model scores the same with and without the cache (notebook 05 reads the files).
    ``reduced_decode=False`` decodes at full size instead (a benchmark of the seed's way; not equal then).
    """
    specs = [
        CropSpec(p, tuple(int(v) for v in b))
        for p, b in zip(df["path"], df[BOX_COLUMNS].itertuples(index=False, name=None))
    ]
    params = CacheParams(size=cache_size_for(img_size), margin=crop_margin)
    if cache:
        folder = Path(cache_dir) if cache_dir else derived_dir(data_root or ".", "cache")
        return CachedSource(specs, folder, params)
    if not reduced_decode:
        return FileSource(specs, margin=crop_margin, size=params.size)
    return file_source_for(specs, params)


def read_frame(cfg: DataConfig, task: Task, split: str) -> pd.DataFrame:
    """The validated rows of ``split`` (from the background-removed tree when ``cfg.use_nobg``), before ``limit``."""
    root = cfg.root
    images_root = None
    if cfg.use_nobg:
        images_root = Path(cfg.nobg_root) if cfg.nobg_root else derived_dir(root, "nobg")
        if not (images_root / split).is_dir():
            raise FileNotFoundError(
                f"no background-removed images at {images_root / split}; run notebook "
                "02_remove_background.ipynb first (or set use_nobg=False)"
            )
    return read_split(root, task, split, on_error=cfg.on_error, images_root=images_root)


def create_dataset(
    data: DataConfig | str | Path,
    task: str | Task,
    split: str,
    train: bool | None = None,
    df: pd.DataFrame | None = None,
    **overrides: Any,
) -> FashionHowDataset:
    """Read, validate and wrap one split.

    Args:
        data: A :class:`~fh_utils.data.config.DataConfig`, or a data root (then ``overrides`` are its fields).
        task: Task or name.
        split: ``"train"``, ``"val"`` or ``"test"``.
        train: Augment and sample crops at random (default: ``split == "train"``). Evaluation crops to the box
            whenever ``crop_prob > 0``.
        df: An already-read split (skips reading; must come from :func:`read_split`).
        **overrides: :class:`DataConfig` fields (an unknown name is an error).
    """
    cfg = as_data_config(data, **overrides)
    root = cfg.root
    task = get_task(task, root)
    train = split == "train" if train is None else train
    df = read_frame(cfg, task, split) if df is None else df
    if cfg.limit:
        df = df.head(cfg.limit).reset_index(drop=True)
    augment = cfg.augment if train else "none"
    transform = create_transforms(task, cfg.img_size, train=train, augment=augment, color_spaces=cfg.color_spaces,
                                  seed=cfg.seed)  # fmt: skip
    cache_dir = cfg.cache_dir or None
    if cfg.use_nobg and cache_dir is None and cfg.cache:
        cache_dir = derived_dir(root, "cache_nobg")
    source = build_source(df, cfg.img_size, cfg.crop_margin, cache=cfg.cache, cache_dir=cache_dir, data_root=root)
    crop_prob = cfg.crop_prob if train else float(cfg.crop_prob > 0)
    return FashionHowDataset(df, task, transform, source, crop_prob=crop_prob, train=train)


def _split_frames(cfg: DataConfig, task: Task, splits: tuple[str, ...]) -> tuple[dict[str, pd.DataFrame], dict]:
    """Rows of "train" / "val" under ``cfg.split`` (:mod:`fh_utils.data.folds`); ``{}`` for the plain split."""
    if cfg.split == "val" or "train" not in splits:
        return {}, {"split": cfg.split}
    parts = {}
    for name in ("train", "val"):
        frame = read_frame(cfg, task, name)
        parts[name] = frame.head(cfg.limit).reset_index(drop=True) if cfg.limit else frame
    fit_rows, val_rows, record = make_split(parts["train"], parts["val"], task, cfg.split, seed=cfg.seed,
                                            head=cfg.sampler_head)  # fmt: skip
    frames = {"train": fit_rows}
    if val_rows is not None:
        frames["val"] = val_rows
    return frames, record


def create_loaders(
    data: DataConfig | str | Path,
    task: str | Task,
    splits: tuple[str, ...] = ("train", "val"),
    **overrides: Any,
) -> dict[str, DataLoader]:
    """Build a DataLoader per split (train shuffled or class-balanced, others in CSV order).

    Args:
        data: A :class:`~fh_utils.data.config.DataConfig`, or a data root (then ``overrides`` are its fields,
            e.g. ``create_loaders("data/demo", "st2", img_size=56, sampler="balanced")``).
        task: Task or name.
        splits: Splits to build.
        **overrides: :class:`DataConfig` fields (an unknown name is an error).

    With ``split="fold:K/N"`` the "train" and "val" loaders hold the other folds and fold K of train ∪ val;
    with ``split="full"`` "train" holds train ∪ val and there is no "val" loader. The train dataset's
    ``split_record`` describes the assignment (:func:`fh_utils.data.folds.split_record`).

    Returns:
        ``{split: DataLoader}``; each loader's dataset is a :class:`FashionHowDataset`.
    """
    cfg = as_data_config(data, **overrides)
    task = get_task(task, cfg.root)
    frames, record = _split_frames(cfg, task, splits)
    loaders = {}
    for split in splits:
        if frames and split == "val" and split not in frames:
            continue  # split="full": no validation loader
        train = split == "train"
        if split in frames:  # fold / full rows, already limited: limit=0 keeps them all
            ds = create_dataset(cfg.replace(limit=0), task, split, train=train, df=frames[split])
        else:
            ds = create_dataset(cfg, task, split, train=train)
        if train:
            ds.split_record = record
        generator = torch.Generator().manual_seed(cfg.seed)
        sampler = None
        if train and cfg.sampler == "balanced":
            head = task.head(cfg.sampler_head or task.heads[0].column)
            labels = ds.targets[:, task.heads.index(head)]
            sampler = create_balanced_sampler(labels, head.num_classes, generator)
        loaders[split] = DataLoader(
            ds,
            batch_size=cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size),
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(ds) > cfg.batch_size,
            num_workers=cfg.num_workers,
            worker_init_fn=_worker_init if cfg.num_workers > 0 else None,
            generator=generator,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
    return loaders
