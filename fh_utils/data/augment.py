"""Augmentation pipelines, built by :func:`create_transforms` from a name and the task.

A transform maps an RGB uint8 crop to a uint8 CHW tensor. Normalisation is done by the model (its data
config carries mean and std), so the same uint8 batch serves any backbone and crosses to a GPU 4x smaller.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from fh_utils.data.colorspaces import check_spaces, to_color_spaces
from fh_utils.tasks import Task, get_task

AUGMENTS = ("myungbin", "none")


def _myungbin_pipeline(task: Task, img_size: int, fill: int | tuple[int, ...] = 0) -> list[A.BasicTransform]:
    """The seed's pipeline (Myungbin, 2nd place): geometric only for colour, plus photometric for ST1.

    ``fill``: colour of the border the affine uncovers (a letterbox's pad colour; 0 as the seed).
    """
    geometric = [
        A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA),
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, fill=fill, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                        hole_width_range=(0.05, 0.15), fill=0, p=0.5),
    ]  # fmt: skip
    if task.name == "st2":
        # Colour is the label: HSV/brightness jitter hurt ST2 in the seed's experiments.
        return geometric
    return geometric + [A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3)]


class Transform:
    """Albumentations pipeline, optional colour-space stacking, then a uint8 CHW tensor.

    Args:
        augs: Albumentations transforms (uint8 in, uint8 out).
        color_spaces: Colour spaces to stack after augmentation (see :mod:`fh_utils.data.colorspaces`).
        seed: Seed of the augmentation RNG.
    """

    def __init__(self, augs: list[A.BasicTransform], color_spaces: tuple[str, ...] = ("rgb",), seed: int = 0):
        self.pipeline = A.Compose(augs, seed=seed)
        self.color_spaces = check_spaces(color_spaces)

    def set_seed(self, seed: int) -> None:
        """Re-seed the augmentation RNG (the engine does this per epoch and per worker)."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """Augment one RGB uint8 image and return a uint8 ``(C, H, W)`` tensor."""
        out = self.pipeline(image=rgb)["image"]
        out = to_color_spaces(np.ascontiguousarray(out), self.color_spaces)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def create_transforms(
    task: str | Task,
    img_size: int,
    train: bool,
    augment: str = "myungbin",
    color_spaces: tuple[str, ...] = ("rgb",),
    seed: int = 0,
    fill: int | tuple[int, ...] = 0,
) -> Transform:
    """Build the transform of a split.

    Args:
        task: Task description or name (ST2 gets colour-safe augmentation only).
        img_size: Output side, px (square).
        train: Training split (augmented) or evaluation (resize only).
        augment: ``"myungbin"`` (the 2nd-place pipeline of Myungbin, the "seed" recipe) or ``"none"`` (resize only).
        color_spaces: Colour spaces stacked into the channels, e.g. ``("rgb", "hsv", "lab", "hls", "yuv")``.
        seed: Seed of the augmentation RNG.
        fill: Colour of the border the training affine uncovers: the letterbox's pad colour
            (:attr:`fh_utils.data.config.DataConfig.pad_value`), else 0.

    Returns:
        A :class:`Transform`.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    task = get_task(task)
    if train and augment == "myungbin":
        augs = _myungbin_pipeline(task, img_size, fill)
    else:
        augs = [A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA)]
    return Transform(augs, color_spaces=color_spaces, seed=seed)
