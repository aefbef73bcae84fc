"""One Dataset for both sub-tasks, the class-balanced sampler, and :func:`create_loaders`.

A configuration goes one way through :func:`create_loaders`: the task is resolved once (its ``classes.json`` read
once), each split's rows are read once with ``limit`` applied there, the rows of ``split`` (plain, fold or full)
are chosen from them, and each dataset is built from its rows, the train one holding the split's record. Where
the images and the cache are is the configuration's to say (:meth:`DataConfig.images_root`,
:meth:`DataConfig.cache_root`).

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
from fh_utils.data.exclude import exclude_train_rows
from fh_utils.data.folds import make_split
from fh_utils.data.reader import BOX_COLUMNS, read_split
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
        split_record: Which rows train and which validate under ``DataConfig.split``
            (:func:`fh_utils.data.folds.make_split`'s record); :func:`create_loaders` gives it to the train set.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        task: Task,
        transform: Transform,
        source: FileSource | CachedSource,
        crop_prob: float = 1.0,
        train: bool = False,
        split_record: dict[str, Any] | None = None,
    ):
        self.df = df.reset_index(drop=True)
        self.task = task
        self.transform = transform
        self.source = source
        self.crop_prob = float(crop_prob)
        self.train = train
        self.split_record: dict[str, Any] = dict(split_record or {})
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
    resize: str = "stretch",
    pad_value: tuple[int, int, int] = (0, 0, 0),
) -> FileSource | CachedSource:
    """Image source of a split: the decode-once cache, or the files computing the same crops.

    Both paths give the same array for a row, bit for bit (decode at the cache's reduction, crop, resize to
    the cache side), so a model scores the same with and without the cache (notebook 05 reads the files).
    ``reduced_decode=False`` decodes at full size instead (a benchmark of the seed's way; not equal then).
    ``resize="letterbox"`` letterboxes the crop to the cache side with ``pad_value`` instead of stretching it
    (:attr:`fh_utils.data.config.DataConfig.resize`).
    """
    specs = [
        CropSpec(p, tuple(int(v) for v in b))
        for p, b in zip(df["path"], df[BOX_COLUMNS].itertuples(index=False, name=None))
    ]
    params = CacheParams(size=cache_size_for(img_size), margin=crop_margin, resize=resize,
                         pad_value=tuple(pad_value))  # fmt: skip
    if cache:
        folder = Path(cache_dir) if cache_dir else DataConfig(data_root=str(data_root or ".")).cache_root()
        return CachedSource(specs, folder, params)
    if not reduced_decode:
        return FileSource(specs, margin=crop_margin, size=params.size, resize=resize, pad_value=params.pad_value)
    return file_source_for(specs, params)


def read_rows(cfg: DataConfig, task: Task, split: str) -> pd.DataFrame:
    """The validated rows of ``split`` (from :meth:`DataConfig.images_root`), the first ``cfg.limit`` when set.

    ``task`` is resolved for ``cfg.root`` (:func:`fh_utils.tasks.get_task`): its ``classes.json`` is not read again.
    """
    images_root = cfg.images_root()
    if images_root is not None and not (images_root / split).is_dir():
        raise FileNotFoundError(
            f"no background-removed images at {images_root / split}; run notebook "
            "02_remove_background.ipynb first (or set use_nobg=False)"
        )
    df = read_split(cfg.root, task, split, on_error=cfg.on_error, images_root=images_root)
    return _limited(df, cfg.limit)


def _limited(df: pd.DataFrame, limit: int) -> pd.DataFrame:
    return df.head(limit).reset_index(drop=True) if limit else df


def _dataset(
    cfg: DataConfig, task: Task, df: pd.DataFrame, train: bool, split_record: dict[str, Any] | None = None
) -> FashionHowDataset:
    """Wrap rows that are already read (and limited) with ``cfg``'s transform, image source and crop setting."""
    augment = cfg.augment if train else "none"
    # A letterbox's training affine fills the border it uncovers with the pad colour (the stretch: 0, the seed's).
    fill = cfg.pad_value if cfg.resize == "letterbox" else 0
    transform = create_transforms(task, cfg.img_size, train=train, augment=augment, color_spaces=cfg.color_spaces,
                                  seed=cfg.seed, fill=fill)  # fmt: skip
    source = build_source(df, cfg.img_size, cfg.crop_margin, cache=cfg.cache,
                          cache_dir=cfg.cache_root() if cfg.cache else None, data_root=cfg.root,
                          resize=cfg.resize, pad_value=cfg.pad_value)  # fmt: skip
    crop_prob = cfg.crop_prob if train else float(cfg.crop_prob > 0)
    return FashionHowDataset(df, task, transform, source, crop_prob=crop_prob, train=train, split_record=split_record)


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
        df: An already-read split (skips reading; must come from :func:`read_split`); ``limit`` applies to it too.
        **overrides: :class:`DataConfig` fields (an unknown name is an error).
    """
    cfg = as_data_config(data, **overrides)
    task = get_task(task, cfg.root)
    train = split == "train" if train is None else train
    df = read_rows(cfg, task, split) if df is None else _limited(df, cfg.limit)
    return _dataset(cfg, task, df, train)


def split_rows(cfg: DataConfig, task: Task, splits: tuple[str, ...]) -> tuple[dict[str, pd.DataFrame], dict]:
    """The rows of each of ``splits`` under ``cfg.split`` (:mod:`fh_utils.data.folds`), and the split's record.

    Each split is read once, ``limit`` applied (:func:`read_rows`). A fold or full split pools train and val and
    deals them (:func:`fh_utils.data.folds.make_split`); ``split="full"`` has no "val" rows. ``cfg.exclude``'s rows
    then leave the training rows, and only them (:func:`fh_utils.data.exclude.exclude_train_rows`): validation
    stays comparable with a run trained without the list, and every row keeps its fold.
    """
    if cfg.split == "val" or "train" not in splits:
        plain = {split: read_rows(cfg, task, split) for split in splits}
        return exclude_train_rows(cfg.exclude, plain, {"split": cfg.split})
    pooled = {name: read_rows(cfg, task, name) for name in ("train", "val")}
    fit_rows, val_rows, record = make_split(pooled["train"], pooled["val"], task, cfg.split, seed=cfg.seed,
                                            head=cfg.sampler_head)  # fmt: skip
    chosen = {"train": fit_rows, "val": val_rows}
    rows = {}
    for split in splits:
        if split in chosen:
            if chosen[split] is not None:  # split="full": no validation rows
                rows[split] = chosen[split]
        else:
            rows[split] = read_rows(cfg, task, split)
    return exclude_train_rows(cfg.exclude, rows, record)


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
    task = get_task(task, cfg.root)  # the one resolution: classes.json is read here only
    rows, record = split_rows(cfg, task, splits)
    loaders = {}
    for split, df in rows.items():
        train = split == "train"
        ds = _dataset(cfg, task, df, train, split_record=record if train else None)
        if train:  # the head a balanced sampler balances, also for one made later (fh_utils.training.rebalance)
            ds.sampler_head = cfg.sampler_head or task.heads[0].column
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
