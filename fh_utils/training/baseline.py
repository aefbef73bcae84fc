"""Colour-statistics baseline for ST2: colour histograms of the garment and a class-balanced linear model.

Colour is a low-level property; a network trained from scratch must beat this trivial model to be worth its
training time. The features are :class:`fh_utils.models.color_features.ColorHistogram`, the same extractor
``create_model(color_hist=True)`` uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fh_utils.models.color_features import ColorHistogram
from fh_utils.training.metrics import per_class_accuracy


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
    from fh_utils.data.augment import create_transforms
    from fh_utils.data.datasets import FashionHowDataset

    def eval_view(ds: FashionHowDataset) -> FashionHowDataset:
        size = ds.transform.pipeline.transforms[0].height
        transform = create_transforms(task, size, train=False, augment="none")
        return FashionHowDataset(ds.df, task, transform, ds.source, crop_prob=float(ds.crop_prob > 0), train=False)

    head = task.heads[0]
    return fit_color_baseline(
        eval_view(loaders["train"].dataset), eval_view(loaders["val"].dataset), head.num_classes, progress=progress
    )
