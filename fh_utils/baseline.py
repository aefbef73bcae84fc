"""Colour-statistics baseline for ST2: colour histograms of the garment and a class-balanced linear model.

Colour is a low-level property; a network trained from scratch must beat this trivial model to be worth its
training time. :class:`ColorHistogram` is the one feature extractor: the sklearn baseline uses it on the
evaluation crops, and ``create_model(color_hist=True)`` concatenates it with the backbone's features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fh_utils.metrics import per_class_accuracy

_HUE_BINS, _SAT_BINS, _VAL_BINS = 12, 3, 4
_AB_BINS, _L_BINS = 8, 8


def _rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-6), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-6)
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return hue, sat, maxc


def _rgb_to_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], device=rgb.device
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / torch.tensor([0.9505, 1.0, 1.089], device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _hist(index: torch.Tensor, bins: int) -> torch.Tensor:
    """Normalised histogram per image of integer bin indices ``(B, N)``."""
    one_hot = torch.zeros(index.shape[0], bins, device=index.device)
    one_hot.scatter_add_(1, index, torch.ones_like(index, dtype=one_hot.dtype))
    return one_hot / index.shape[1]


class ColorHistogram(nn.Module):
    """Colour histograms of the centre of a uint8 RGB crop: joint HSV, LAB a*b*, L*, plus mean RGB.

    Not trained and not differentiated: it reads colour statistics the backbone would otherwise have to
    learn from few examples. Output is the square root of each histogram (Hellinger), so a linear layer on
    it compares distributions sensibly.

    Args:
        centre: Fraction of the crop side kept around the centre (the garment, not the box's corners).
        rgb_channels: Which input channels are R, G, B (default the first three).
    """

    num_features = _HUE_BINS * _SAT_BINS * _VAL_BINS + _AB_BINS * _AB_BINS + _L_BINS + 3

    def __init__(self, centre: float = 0.6, rgb_channels: tuple[int, ...] | None = (0, 1, 2)):
        super().__init__()
        self.centre = centre
        self.rgb_channels = list(rgb_channels or (0, 1, 2))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, num_features)`` of a uint8 (or 0..255) ``(B, C, H, W)`` batch."""
        rgb = x[:, self.rgb_channels].float() / 255.0
        h, w = rgb.shape[-2:]
        dh, dw = int(h * (1 - self.centre) / 2), int(w * (1 - self.centre) / 2)
        rgb = rgb[:, :, dh : h - dh, dw : w - dw]
        hue, sat, val = _rgb_to_hsv(rgb)
        hi = (hue * _HUE_BINS).long().clamp(0, _HUE_BINS - 1)
        si = (sat * _SAT_BINS).long().clamp(0, _SAT_BINS - 1)
        vi = (val * _VAL_BINS).long().clamp(0, _VAL_BINS - 1)
        hsv_index = ((hi * _SAT_BINS + si) * _VAL_BINS + vi).flatten(1)
        lum, a, b = _rgb_to_lab(rgb)
        ai = ((a + 64) / 128 * _AB_BINS).long().clamp(0, _AB_BINS - 1)
        bi = ((b + 64) / 128 * _AB_BINS).long().clamp(0, _AB_BINS - 1)
        li = (lum / 100 * _L_BINS).long().clamp(0, _L_BINS - 1).flatten(1)
        feats = [
            _hist(hsv_index, _HUE_BINS * _SAT_BINS * _VAL_BINS),
            _hist((ai * _AB_BINS + bi).flatten(1), _AB_BINS * _AB_BINS),
            _hist(li, _L_BINS),
        ]
        hists = torch.cat(feats, dim=1).sqrt()
        return torch.cat([hists, rgb.mean(dim=(2, 3))], dim=1)


def extract_color_features(
    dataset: Dataset, batch_size: int = 64, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Colour features and labels of every row of an (evaluation-mode) dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    hist = ColorHistogram()
    feats, labels = [], []
    for x, y in tqdm(loader, desc="colour features", disable=not progress, leave=False):
        feats.append(hist(x).numpy())
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


@dataclass
class BaselineResult:
    """Outcome of the colour baseline on one head.

    Attributes:
        score: ACSA (mean per-class accuracy) on the evaluation split.
        per_class: Accuracy of each class (NaN where the class is absent).
        predictions: Predicted class of each evaluation row.
        probabilities: Class probabilities of each evaluation row.
        seconds: Wall time (features and fit).
    """

    score: float
    per_class: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    seconds: float


def fit_color_baseline(
    train_set: Dataset, eval_set: Dataset, num_classes: int, head_index: int = 0, progress: bool = True
) -> BaselineResult:
    """Fit the class-balanced logistic regression on colour histograms and score it with ACSA.

    Args:
        train_set: Training rows (use an evaluation transform: no augmentation).
        eval_set: Rows to score (with labels).
        num_classes: Classes of the head.
        head_index: Which label column of the targets to use.
        progress: Show progress bars.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    x_train, y_train = extract_color_features(train_set, progress=progress)
    x_eval, y_eval = extract_color_features(eval_set, progress=progress)
    y_train, y_eval = y_train[:, head_index], y_eval[:, head_index]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, class_weight="balanced", max_iter=3000))
    clf.fit(x_train, y_train)
    proba = np.zeros((len(x_eval), num_classes))
    proba[:, clf.classes_] = clf.predict_proba(x_eval)
    pred = proba.argmax(1)
    acc = per_class_accuracy(y_eval, pred, num_classes)
    return BaselineResult(float(np.nanmean(acc)), acc, pred, proba, time.perf_counter() - start)


def baseline_for_loaders(loaders: dict[str, DataLoader], task, progress: bool = True) -> BaselineResult:
    """Fit and score the colour baseline on the rows of a run's train and val loaders (first head).

    The crops come from the loaders' own image sources (so the decode-once cache is shared) through a
    resize-only transform, at the run's input size.
    """
    from fh_utils.augment import create_transforms
    from fh_utils.datasets import FashionHowDataset

    def eval_view(ds: FashionHowDataset) -> FashionHowDataset:
        size = ds.transform.pipeline.transforms[0].height
        transform = create_transforms(task, size, train=False, augment="none")
        return FashionHowDataset(ds.df, task, transform, ds.source, crop_prob=float(ds.crop_prob > 0), train=False)

    head = task.heads[0]
    return fit_color_baseline(
        eval_view(loaders["train"].dataset), eval_view(loaders["val"].dataset), head.num_classes, progress=progress
    )
