"""What the demo dataset holds: per split, the images, their file names, formats and labels, and the CSV rows.

The plan is drawn from the seed alone, before any pixel: the real folder names and class imbalance scaled
down, ST1 and ST2 pools that overlap, and labels independent of each other and of the folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fh_utils.tasks import COLOR, REAL_TRAIN_COUNTS, ST1

FOLDERS = (
    "1209", "20200112_up", "2BLOUSE 2019", "2CARDIGON 2019", "2COAT 2019", "2JACKET 2019", "2JUMPER 2019",
    "2KINT", "2ONEPIECE 2019", "2SHIRT 2019", "2SKIRT2019", "2Sweater 2019", "2VEST 2019", "2pants 2019",
)  # fmt: skip
# File-name prefixes per folder, in the style of the real ``1209/BO00001-1.jpg``.
_PREFIXES = ("BO", "UP", "BL", "CD", "CT", "JK", "JP", "KN", "OP", "SH", "SK", "SW", "VT", "PT")

# Rows at scale 1.0: about 1,500 train and 400 val rows per task.
_ST1_TRAIN, _ST1_VAL, _ST2_TRAIN, _ST2_VAL_PER_CLASS = 1500, 400, 1500, 22
_PNG_FRACTION = 0.05  # real ST2 train: 516 PNGs of 11,058 images
_VAL_NUMBER_OFFSET = 50000  # val file numbers differ from train ones, so merged folders do not collide
# A split's code in every seed key, here and in render.render_image.
SPLIT_CODES = {"train": 0, "val": 1}


def _quota(counts: Sequence[int], n: int) -> np.ndarray:
    """Split ``n`` rows over classes in proportion to ``counts`` (largest remainder), at least 1 each."""
    p = np.asarray(counts, np.float64) / float(sum(counts))
    raw = p * n
    q = np.maximum(np.floor(raw).astype(np.int64), 1)
    while q.sum() > n:
        q[np.argmax(np.where(q > 1, q, -1))] -= 1
    order = np.argsort(-(raw - q), kind="stable")
    for k in range(int(n - q.sum())):
        q[order[k % len(q)]] += 1
    return q


def _row_counts(scale: float) -> dict[str, int]:
    """Rows per task and split at ``scale`` (at least one per class of every head)."""
    min_st1 = max(h.num_classes for h in ST1.heads)
    return {
        "st1_train": max(min_st1, round(_ST1_TRAIN * scale)),
        "st1_val": max(min_st1, round(_ST1_VAL * scale)),
        "st2_train": max(len(COLOR), round(_ST2_TRAIN * scale)),
        "st2_val_per_class": max(1, round(_ST2_VAL_PER_CLASS * scale)),
    }


def _assign(rng: np.random.Generator, pool: int, listed: np.ndarray, quota: np.ndarray, counts) -> np.ndarray:
    """Labels for a pool: exact class quotas (shuffled) on the listed images, real frequencies elsewhere."""
    labels = rng.choice(len(counts), size=pool, p=np.asarray(counts, np.float64) / sum(counts))
    labels[listed] = rng.permutation(np.repeat(np.arange(len(quota)), quota))
    return labels


def _plan_split(seed: int, split: str, n1: int, n2: int, st2_quota: np.ndarray) -> dict:
    """Decide, for one split, the image pool, each image's labels, file name and format, and the CSV rows.

    ST1 and ST2 share part of the pool, as the real pools overlap. Labels of the four heads are drawn
    independently of each other and of the folder.
    """
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 1_000_003])
    overlap = min(n1, n2) // 2
    pool = n1 + n2 - overlap
    perm = rng.permutation(pool)
    st1_idx, st2_idx = np.sort(perm[:n1]), np.sort(perm[n1 - overlap :])
    labels = {}
    for head in ST1.heads:
        counts = REAL_TRAIN_COUNTS[head.column]
        labels[head.column] = _assign(rng, pool, st1_idx, _quota(counts, n1), counts)
    labels["Color"] = _assign(rng, pool, st2_idx, st2_quota, REAL_TRAIN_COUNTS["Color"])
    folders = rng.integers(len(FOLDERS), size=pool)
    shots = rng.integers(1, 5, size=pool)
    png = rng.choice(pool, size=max(1, round(_PNG_FRACTION * pool)), replace=False)
    is_png, is_rgba = np.zeros(pool, bool), np.zeros(pool, bool)
    is_png[png] = True
    is_rgba[png[: math.ceil(len(png) / 2)]] = True
    offset = _VAL_NUMBER_OFFSET if split == "val" else 0
    names = [
        f"{FOLDERS[f]}/{_PREFIXES[f]}{offset + i + 1:05d}-{s}.{'png' if p else 'jpg'}"
        for i, (f, s, p) in enumerate(zip(folders, shots, is_png))
    ]
    return {"names": names, "labels": labels, "rgba": is_rgba, "st1": st1_idx, "st2": st2_idx}


def make_plans(seed: int, scale: float) -> dict[str, dict]:
    """The plan of both splits: per split, ``names``, ``labels`` (per column), ``rgba``, ``st1`` and ``st2``.

    Args:
        seed: Dataset seed.
        scale: Multiplies all row counts (see :func:`fh_utils.prep.demo.generate_demo_dataset`).

    Returns:
        ``{"train": plan, "val": plan}``; ``st1`` and ``st2`` index the images each task's CSV lists.
    """
    rows = _row_counts(scale)
    st2_train = _quota(REAL_TRAIN_COUNTS["Color"], rows["st2_train"])
    st2_val = np.full(len(COLOR), rows["st2_val_per_class"])  # balanced, like the real val (100 per class)
    return {
        "train": _plan_split(seed, "train", rows["st1_train"], int(st2_train.sum()), st2_train),
        "val": _plan_split(seed, "val", rows["st1_val"], int(st2_val.sum()), st2_val),
    }
