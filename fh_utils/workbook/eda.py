"""Exploratory data analysis: the numbers behind the EDA figures (no drawing here, see :mod:`fh_utils.workbook.plots`).

Every function takes DataFrames from :func:`fh_utils.data.reader.read_split` and returns plain DataFrames, so the
notebook can show them as tables and the tests can check them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from fh_utils.data.cache import reduce_factor
from fh_utils.data.images import crop_box, load_image
from fh_utils.data.reader import BOX_COLUMNS, class_counts, read_split
from fh_utils.tasks import Task, get_task


def read_splits(
    data_root: str | Path, tasks: tuple[str, ...] = ("st1", "st2"), splits: tuple[str, ...] = ("train", "val")
) -> dict[str, dict[str, pd.DataFrame]]:
    """Read and validate every split of every task: ``{task: {split: DataFrame}}``."""
    return {t: {s: read_split(data_root, get_task(t, data_root), s) for s in splits} for t in tasks}


def count_table(frames: dict[str, pd.DataFrame], task: Task) -> pd.DataFrame:
    """Rows per class, head and split, in long form.

    Args:
        frames: ``{split: DataFrame}`` of one task.
        task: Its description (class names).

    Returns:
        Columns ``head``, ``class_id``, ``class_name``, ``split``, ``count``, ``share`` (of the split's rows).
    """
    rows = []
    for split, df in frames.items():
        for head in task.heads:
            counts = class_counts(df, task)[head.column]
            for cid, (name, n) in enumerate(zip(head.class_names, counts)):
                rows.append(dict(head=head.column, class_id=cid, class_name=name, split=split, count=int(n),
                                 share=float(n) / max(1, len(df))))  # fmt: skip
    return pd.DataFrame(rows)


def imbalance_ratio(counts: np.ndarray | list[int]) -> float:
    """Largest class count over smallest (``inf`` when a class has no row)."""
    counts = np.asarray(counts, dtype=np.float64)
    return float("inf") if counts.min() == 0 else float(counts.max() / counts.min())


def imbalance_table(frames: dict[str, pd.DataFrame], task: Task) -> pd.DataFrame:
    """One row per head and split: classes, rows, largest and smallest class, and their ratio."""
    rows = []
    for split, df in frames.items():
        for head in task.heads:
            counts = class_counts(df, task)[head.column]
            rows.append(dict(head=head.column, split=split, classes=head.num_classes, rows=int(counts.sum()),
                             absent=int((counts == 0).sum()), largest=head.class_names[int(counts.argmax())],
                             max_count=int(counts.max()), smallest=head.class_names[int(counts.argmin())],
                             min_count=int(counts.min()), ratio=imbalance_ratio(counts)))  # fmt: skip
    return pd.DataFrame(rows)


def cooccurrence(df: pd.DataFrame, task: Task, row_head: str, col_head: str) -> pd.DataFrame:
    """Count table of two heads' labels (every class present, indexed by class names)."""
    a, b = task.head(row_head), task.head(col_head)
    table = pd.crosstab(df[a.column], df[b.column]).reindex(
        index=range(a.num_classes), columns=range(b.num_classes), fill_value=0
    )
    table.index = pd.Index(a.class_names, name=a.column)
    table.columns = pd.Index(b.class_names, name=b.column)
    return table


def cooccurrence_tables(df: pd.DataFrame, task: Task) -> dict[tuple[str, str], pd.DataFrame]:
    """:func:`cooccurrence` of every pair of heads: ``{(row head, column head): table}``."""
    return {(a.column, b.column): cooccurrence(df, task, a.column, b.column)
            for a, b in itertools.combinations(task.heads, 2)}  # fmt: skip


def box_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Box geometry of every row of a split read with image sizes.

    Returns:
        ``box_width``, ``box_height`` (px), ``aspect`` (width / height), ``rel_area`` (box area over image
        area; NaN when the image size is unknown), ``image_width``, ``image_height``.
    """
    x0, y0, x1, y1 = (df[c].to_numpy(np.float64) for c in BOX_COLUMNS)
    w, h = x1 - x0, y1 - y0
    iw, ih = df["width"].to_numpy(np.float64), df["height"].to_numpy(np.float64)
    known = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(known, w * h / (iw * ih), np.nan)
    columns = {"box_width": w, "box_height": h, "aspect": w / h, "rel_area": rel,
               "image_width": np.where(known, iw, np.nan),
               "image_height": np.where(known, ih, np.nan)}  # fmt: skip
    return pd.DataFrame(columns, index=df.index)


def box_stats_all(frames: dict[str, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """:func:`box_stats` of every distinct (split, image, box) over all tasks, with a ``split`` column."""
    parts = []
    for by_split in frames.values():
        for split, df in by_split.items():
            parts.append(pd.concat([df[["image_name", *BOX_COLUMNS]], box_stats(df)], axis=1).assign(split=split))
    out = pd.concat(parts, ignore_index=True)
    return out.drop_duplicates(subset=["split", "image_name", *BOX_COLUMNS]).reset_index(drop=True)


def sample_per_class(df: pd.DataFrame, column: str, n: int, seed: int = 0) -> dict[int, pd.DataFrame]:
    """Up to ``n`` random rows of each class of ``column``: ``{class id: rows}`` (classes with rows only)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cid, rows in df.groupby(column, sort=True):
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        out[int(cid)] = rows.iloc[np.sort(pick)]
    return out


def box_centre_color(path: str | Path, box: tuple[int, int, int, int], centre: float = 0.5) -> np.ndarray:
    """Mean RGB (0..255) of the central ``centre`` fraction of a box: the garment, not its surroundings."""
    x0, y0, x1, y1 = box
    reduce = reduce_factor(min(x1 - x0, y1 - y0), 32)
    img = load_image(path, reduce=reduce)
    mx, my = (x1 - x0) * (1 - centre) / 2, (y1 - y0) * (1 - centre) / 2
    inner = (int(x0 + mx), int(y0 + my), int(np.ceil(x1 - mx)), int(np.ceil(y1 - my)))
    crop = crop_box(img, inner, scale=1.0 / reduce)
    return crop.reshape(-1, 3).mean(axis=0)


def sample_box_colors(
    df: pd.DataFrame,
    task: Task,
    column: str = "Color",
    per_class: int = 20,
    seed: int = 0,
    centre: float = 0.5,
) -> pd.DataFrame:
    """Mean colour of the centre of up to ``per_class`` sampled boxes of each class.

    Returns:
        One row per sampled box: ``class_id``, ``class_name``, ``image_name``, ``r``, ``g``, ``b`` (0..255).
    """
    head = task.head(column)
    rows = []
    for cid, sample in sample_per_class(df, head.column, per_class, seed).items():
        for name, path, *box in sample[["image_name", "path", *BOX_COLUMNS]].itertuples(index=False, name=None):
            r, g, b = box_centre_color(path, tuple(int(v) for v in box), centre)
            rows.append(dict(class_id=cid, class_name=head.class_names[cid], image_name=name, r=r, g=g, b=b))
    return pd.DataFrame(rows, columns=["class_id", "class_name", "image_name", "r", "g", "b"])


def class_mean_colors(box_colors: pd.DataFrame, task: Task, column: str = "Color") -> pd.DataFrame:
    """Per class (all, in id order): ``n`` boxes sampled and their mean ``r``, ``g``, ``b`` (NaN if none)."""
    head = task.head(column)
    mean = box_colors.groupby("class_id")[["r", "g", "b"]].mean()
    n = box_colors.groupby("class_id").size()
    out = pd.DataFrame({"class_id": range(head.num_classes), "class_name": list(head.class_names)})
    out["n"] = out["class_id"].map(n).fillna(0).astype(int)
    for c in "rgb":
        out[c] = out["class_id"].map(mean[c]) if len(mean) else np.nan
    return out
