"""One Dataset for both sub-tasks, the class-balanced sampler, and :func:`create_loaders`.

Determinism: everything random in a training epoch (sampler order, crop decisions, augmentation) is seeded
from ``(seed, epoch)`` by :func:`seed_epoch`, so an epoch replays identically after a resume.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from fh_utils.augment import Transform, create_transforms
from fh_utils.cache import CachedSource, CacheParams, CropSpec, FileSource, cache_size_for
from fh_utils.data import BOX_COLUMNS, read_split
from fh_utils.paths import derived_dir
from fh_utils.tasks import Task, get_task

IMBALANCE_MODES = ("none", "sampler", "logit_adjust")


class FashionHowDataset(Dataset):
    """Rows of a validated split served as ``(uint8 image tensor, label tensor)``.

    Args:
        df: DataFrame from :func:`fh_utils.data.read_split`.
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
    loader.dataset.transform.set_seed(epoch_seed)


def build_source(
    df: pd.DataFrame,
    img_size: int,
    crop_margin: float = 0.0,
    cache: bool = False,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    reduced_decode: bool = True,
) -> FileSource | CachedSource:
    """Image source of a split: the decode-once cache, or the files (optionally with reduced decoding)."""
    specs = [
        CropSpec(p, tuple(int(v) for v in b))
        for p, b in zip(df["path"], df[BOX_COLUMNS].itertuples(index=False, name=None))
    ]
    if cache:
        params = CacheParams(size=cache_size_for(img_size), margin=crop_margin)
        folder = Path(cache_dir) if cache_dir else derived_dir(data_root or ".", "cache")
        return CachedSource(specs, folder, params)
    return FileSource(specs, margin=crop_margin, target_size=img_size if reduced_decode else None)


def create_dataset(
    data_root: str | Path,
    task: str | Task,
    split: str,
    img_size: int = 224,
    train: bool | None = None,
    augment: str = "seed",
    crop_prob: float = 1.0,
    crop_margin: float = 0.0,
    use_nobg: bool = False,
    nobg_root: str | Path | None = None,
    color_spaces: tuple[str, ...] = ("rgb",),
    cache: bool = False,
    cache_dir: str | Path | None = None,
    on_error: str = "raise",
    seed: int = 0,
    df: pd.DataFrame | None = None,
    limit: int | None = None,
) -> FashionHowDataset:
    """Read, validate and wrap one split.

    Args:
        data_root: Data root.
        task: Task or name.
        split: ``"train"``, ``"val"`` or ``"test"``.
        img_size: Model input side, px.
        train: Augment and sample crops at random (default: ``split == "train"``).
        augment: Augmentation pipeline name (see :func:`fh_utils.augment.create_transforms`).
        crop_prob: Probability of the bbox crop.
        crop_margin: Margin around the box, as a fraction of its size.
        use_nobg: Read the background-removed copies (made by notebook 02) instead of the raw images.
        nobg_root: Where those copies are (default: :func:`fh_utils.paths.derived_dir` ``(root, "nobg")``).
        color_spaces: Colour spaces stacked into the input channels.
        cache: Serve crops from the decode-once cache.
        cache_dir: Cache folder (default: beside the data root, see :func:`fh_utils.paths.derived_dir`).
        on_error: Passed to :func:`fh_utils.data.read_split`.
        seed: Augmentation seed.
        df: An already-read split (skips reading; must come from :func:`read_split`).
        limit: Keep only the first ``limit`` rows (quick experiments and tests); None keeps all.
    """
    task = get_task(task, data_root)
    train = split == "train" if train is None else train
    if df is None:
        images_root = None
        if use_nobg:
            images_root = Path(nobg_root) if nobg_root else derived_dir(data_root, "nobg")
            if not (images_root / split).is_dir():
                raise FileNotFoundError(
                    f"no background-removed images at {images_root / split}; run notebook "
                    "02_remove_background.ipynb first (or set use_nobg=False)"
                )
        df = read_split(data_root, task, split, on_error=on_error, images_root=images_root)
    if limit:
        df = df.head(int(limit)).reset_index(drop=True)
    transform = create_transforms(task, img_size, train=train, augment=augment, color_spaces=color_spaces, seed=seed)
    if use_nobg and cache_dir is None and cache:
        cache_dir = derived_dir(data_root, "cache_nobg")
    source = build_source(df, img_size, crop_margin, cache=cache, cache_dir=cache_dir, data_root=data_root)
    return FashionHowDataset(df, task, transform, source, crop_prob=crop_prob, train=train)


def create_loaders(
    data_root: str | Path,
    task: str | Task,
    img_size: int = 224,
    batch_size: int = 64,
    augment: str = "seed",
    crop_prob: float = 1.0,
    crop_margin: float = 0.0,
    use_nobg: bool = False,
    nobg_root: str | Path | None = None,
    imbalance: str = "none",
    sampler_head: str | None = None,
    color_spaces: tuple[str, ...] = ("rgb",),
    cache: bool = False,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    seed: int = 0,
    on_error: str = "raise",
    splits: tuple[str, ...] = ("train", "val"),
    eval_batch_size: int | None = None,
    limit: int | None = None,
) -> dict[str, DataLoader]:
    """Build a DataLoader per split (train shuffled or class-balanced, others in CSV order).

    Args:
        data_root: Data root.
        task: Task or name.
        img_size: Model input side, px.
        batch_size: Training batch size.
        augment: Augmentation pipeline for the training split.
        crop_prob: Probability of the bbox crop during training (evaluation crops when it is > 0).
        crop_margin: Margin around the box, fraction of its size.
        use_nobg: Use background-removed images.
        nobg_root: Their folder (default beside the data root).
        imbalance: ``"none"``, ``"sampler"`` (class-balanced sampling on ``sampler_head``) or
            ``"logit_adjust"`` (handled by the loss; sampling stays uniform).
        sampler_head: Head whose classes the sampler balances (default: the task's first head).
        color_spaces: Colour spaces stacked into the input channels.
        cache: Use the decode-once cache.
        cache_dir: Cache folder.
        num_workers: DataLoader worker processes.
        seed: Seed for sampling and augmentation (re-seeded per epoch by the engine).
        on_error: ``"raise"`` or ``"skip"`` bad rows.
        splits: Splits to build.
        eval_batch_size: Batch size of the evaluation loaders (default ``2 * batch_size``).
        limit: Keep only the first ``limit`` rows of each split (quick runs); None keeps all.

    Returns:
        ``{split: DataLoader}``.
    """
    if imbalance not in IMBALANCE_MODES:
        raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {imbalance!r}")
    task = get_task(task, data_root)
    loaders = {}
    for split in splits:
        train = split == "train"
        ds = create_dataset(
            data_root, task, split, img_size=img_size, train=train, augment=augment,
            crop_prob=crop_prob if train else float(crop_prob > 0), crop_margin=crop_margin,
            use_nobg=use_nobg, nobg_root=nobg_root, color_spaces=color_spaces, cache=cache,
            cache_dir=cache_dir, on_error=on_error, seed=seed, limit=limit,
        )  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if train and imbalance == "sampler":
            head = task.head(sampler_head or task.heads[0].column)
            labels = ds.targets[:, task.heads.index(head)]
            sampler = create_balanced_sampler(labels, head.num_classes, generator)
        loaders[split] = DataLoader(
            ds,
            batch_size=batch_size if train else (eval_batch_size or 2 * batch_size),
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(ds) > batch_size,
            num_workers=num_workers,
            worker_init_fn=_worker_init if num_workers > 0 else None,
            generator=generator,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
    return loaders
