"""Training splits other than train/val: stratified K-of-N folds over train ∪ val, and the full fit.

``DataConfig.split`` selects one:

- ``"val"``: train on train, validate on val (the competition's split);
- ``"fold:K/N"``: pool train and val, deal every class's rows into N folds (shuffled from ``seed``), train on the
  other N-1 folds and validate on fold K. Stratified on the sampler's head, so every fold holds each class in
  proportion; deterministic: the same rows and seed give the same folds;
- ``"full"``: train on train ∪ val with no validation (the final submission model).

Nothing is written into the data folder: the assignment lives in memory and in the run's ``config.json``
(:func:`split_record`), one character per row in CSV order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fh_utils.tasks import Task

SPLIT_MODES = ("val", "full")
_FOLD = re.compile(r"fold:(\d+)/(\d+)")
# One character per row keeps the record of a 10k-row pool near 10 kB of config.json.
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_FOLDS = len(_DIGITS)


@dataclass(frozen=True)
class SplitSpec:
    """A parsed ``split`` value: ``mode`` is ``"val"``, ``"fold"`` or ``"full"``; ``k``/``n`` for folds."""

    mode: str
    k: int = 0
    n: int = 0

    def __str__(self) -> str:
        return f"fold:{self.k}/{self.n}" if self.mode == "fold" else self.mode


def parse_split(value: str) -> SplitSpec:
    """Parse ``"val"``, ``"full"`` or ``"fold:K/N"`` (0 <= K < N, 2 <= N <= 36).

    Raises:
        ValueError: Anything else, naming the accepted forms.
    """
    text = str(value).strip()
    if text in SPLIT_MODES:
        return SplitSpec(text)
    match = _FOLD.fullmatch(text)
    if match:
        k, n = int(match.group(1)), int(match.group(2))
        if 2 <= n <= MAX_FOLDS and 0 <= k < n:
            return SplitSpec("fold", k, n)
    raise ValueError(f"split must be 'val', 'full' or 'fold:K/N' with 0 <= K < N and 2 <= N <= {MAX_FOLDS}, "
                     f"got {value!r}")  # fmt: skip


def assign_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Stratified fold of every row: each class's rows, shuffled from ``seed``, dealt round-robin into folds.

    The deal of each class starts where the previous class's ended, so classes smaller than ``n_folds`` spread
    over the folds instead of all landing in fold 0. Fold sizes differ by at most one row per class.
    """
    labels = np.asarray(labels)
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = 0
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        rows = rows[rng.permutation(len(rows))]
        folds[rows] = (start + np.arange(len(rows))) % n_folds
        start = (start + len(rows)) % n_folds
    return folds


def pooled_frame(train: pd.DataFrame, val: pd.DataFrame) -> pd.DataFrame:
    """Train then val rows in one frame with ``source`` (the CSV) and ``row`` (the index among its rows) columns.

    ``path`` already points at each image.
    """
    frames = [train.assign(source="train", row=np.arange(len(train))),
              val.assign(source="val", row=np.arange(len(val)))]
    pooled = pd.concat(frames, ignore_index=True)
    pooled.attrs = {**train.attrs, "csv": [train.attrs.get("csv"), val.attrs.get("csv")]}
    return pooled


def make_split(
    train: pd.DataFrame, val: pd.DataFrame, task: Task, split: str | SplitSpec, seed: int = 0, head: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """The training and validation rows of ``split``, and the record of the assignment.

    Args:
        train: The train split (from :func:`fh_utils.data.reader.read_split`).
        val: The val split.
        task: Task description (names the stratification head).
        split: ``"val"``, ``"full"`` or ``"fold:K/N"``.
        seed: Seed of the fold shuffle.
        head: Label column to stratify on (default: the task's first head).

    Returns:
        ``(train rows, val rows or None, record)``; ``record`` is :func:`split_record`'s dict.
    """
    spec = split if isinstance(split, SplitSpec) else parse_split(split)
    if spec.mode == "val":
        return train, val, {"split": "val", "train_rows": len(train), "val_rows": len(val)}
    pooled = pooled_frame(train, val)
    if spec.mode == "full":
        return pooled, None, {"split": "full", "train_rows": len(pooled), "val_rows": 0,
                              "pooled": {"train": len(train), "val": len(val)}}  # fmt: skip
    column = head or task.heads[0].column
    folds = assign_folds(pooled[column].to_numpy(), spec.n, seed)
    held = folds == spec.k
    fit_rows = pooled[~held].reset_index(drop=True)
    val_rows = pooled[held].reset_index(drop=True)
    fit_rows.attrs, val_rows.attrs = dict(pooled.attrs), dict(pooled.attrs)
    return fit_rows, val_rows, split_record(spec, pooled, folds, column, seed)


def split_record(spec: SplitSpec, pooled: pd.DataFrame, folds: np.ndarray, column: str, seed: int) -> dict:
    """What ``config.json`` keeps of a fold split: enough to rebuild it without the data folder's help.

    ``assignment`` has one string per source split (``"train"``, ``"val"``) with one character per CSV row
    (in CSV order, after ``limit`` and skipped rows): the row's fold, ``0-9a-z``.
    """
    n_train = int((pooled["source"] == "train").sum())
    chars = "".join(_DIGITS[f] for f in folds)
    held = folds == spec.k
    counts = pd.Series(pooled.loc[held, column]).value_counts().sort_index()
    return {
        "split": str(spec), "stratify_on": column, "seed": int(seed), "train_rows": int((~held).sum()),
        "val_rows": int(held.sum()), "assignment": {"train": chars[:n_train], "val": chars[n_train:]},
        "val_class_counts": {str(k): int(v) for k, v in counts.items()},
    }  # fmt: skip


def decode_assignment(record: dict) -> dict[str, np.ndarray]:
    """The per-row folds of :func:`split_record`'s ``assignment`` as int arrays (``{"train": ..., "val": ...}``)."""
    return {src: np.array([_DIGITS.index(c) for c in text], dtype=np.int64)
            for src, text in record["assignment"].items()}  # fmt: skip
