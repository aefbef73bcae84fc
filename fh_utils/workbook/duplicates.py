"""Notebook 01's near-duplicate section: the pairs as a table, the pools they link, a warning, a gallery.

The hashing and the pair search are :mod:`fh_utils.data.duplicates`; this module turns its result into what a
reader looks at. A near-copy of a train photo in val makes the validation score optimistic (the model has seen
that photo); the same file in two pools (ST1 and ST2 share their folders) is reported apart from near-copies.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fh_utils.data.cache import reduce_factor
from fh_utils.data.duplicates import NearDuplicates, find_near_duplicates
from fh_utils.data.images import ImageLoadError, image_size, load_image

__all__ = ["find_near_duplicates", "leak_warning", "overlap_matrix", "pair_gallery", "pairs_table", "pool_overlap",
           "summary_line", "val_train_leaks"]  # fmt: skip

# Which pairs a reader looks at first: leaks into evaluation, then the test folder, then within a split.
KIND_ORDER = ("train-val", "train-test", "val-test", "train-train", "val-val", "test-test")


def pairs_table(result: NearDuplicates) -> pd.DataFrame:
    """One row per near-copy pair, the most consequential first (train-val, then the test folder, then within a split).

    Returns:
        ``kind`` (the two splits, e.g. ``"train-val"``), ``image_a``, ``pools_a``, ``image_b``, ``pools_b``
        (the pools listing each file), ``distance`` (pHash bits), ``dhash_distance``, ``a``, ``b`` (rows of
        ``result.images``). Side ``a`` is the earlier split (train before val before test).
    """
    p = result.pairs
    rank = {s: k for k, s in enumerate(("train", "val", "test"))}
    swap = p["split_a"].map(rank).to_numpy() > p["split_b"].map(rank).to_numpy()
    out = p.copy()
    for col in ("a", "split", "image", "pools"):
        a, b = (col, "b") if col == "a" else (f"{col}_a", f"{col}_b")
        out.loc[swap, [a, b]] = p.loc[swap, [b, a]].to_numpy()
    out["kind"] = pd.Categorical(out["split_a"] + "-" + out["split_b"], categories=KIND_ORDER, ordered=True)
    out = out.sort_values(["kind", "distance", "dhash_distance", "image_a"], kind="stable").reset_index(drop=True)
    out["kind"] = out["kind"].astype(str)
    return out[["kind", "image_a", "pools_a", "image_b", "pools_b", "distance", "dhash_distance", "a", "b"]]


def _pool_sets(result: NearDuplicates) -> dict[str, set[int]]:
    m = result.memberships
    return {pool: set(rows) for pool, rows in m.groupby("pool", sort=False)["image"]}


def pool_overlap(result: NearDuplicates) -> pd.DataFrame:
    """How far each pool's images reach into each other pool.

    Returns:
        One row per ordered pair of pools (``pool``, ``other``): ``images`` (distinct files of ``pool``),
        ``same_file`` (of them, files ``other`` lists too; 0 on the diagonal by definition), ``near_copy`` (files
        with a near-copy, a different file, in ``other``) and ``share`` (either of the two, over ``images``).
    """
    pools = _pool_sets(result)
    partners: dict[int, set[int]] = {}
    for a, b in result.pairs[["a", "b"]].itertuples(index=False, name=None):
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    rows = []
    for pool, mine in pools.items():
        for other, theirs in pools.items():
            same = mine & theirs if other != pool else set()
            near = {i for i in mine if partners.get(i, set()) & theirs}
            hit = same | near
            rows.append(dict(pool=pool, other=other, images=len(mine), same_file=len(same), near_copy=len(near),
                             share=len(hit) / max(1, len(mine))))  # fmt: skip
    return pd.DataFrame(rows)


def overlap_matrix(overlap: pd.DataFrame) -> pd.DataFrame:
    """:func:`pool_overlap` as a pool x pool table of shares, with each pool's ``images`` first.

    A cell is the share of the row pool's images that are the same file as, or a near-copy of, an image of the
    column pool (on the diagonal: near-copies within the pool).
    """
    table = overlap.pivot(index="pool", columns="other", values="share").round(3)
    order = list(dict.fromkeys(overlap["pool"]))
    table = table.reindex(index=order, columns=order)
    table.insert(0, "images", overlap.groupby("pool")["images"].first().reindex(order))
    table.columns.name = None
    return table


def summary_line(result: NearDuplicates, pairs: pd.DataFrame) -> str:
    """One line: images, how many were hashed now, pairs by kind, unreadable files."""
    kinds = ", ".join(f"{k} {n:,}" for k, n in pairs["kind"].value_counts(sort=False).items() if n) or "none"
    line = (f"{len(result.images):,} images ({result.hashed:,} hashed now, the rest from the cache); "
            f"{len(pairs):,} near-copy pairs within {result.threshold} bits: {kinds}")  # fmt: skip
    if result.errors:
        line += f"; {len(result.errors):,} unreadable, e.g. {next(iter(result.errors.values()))}"
    return line


def val_train_leaks(result: NearDuplicates) -> pd.DataFrame:
    """Per task: how many of its val images are near-copies of its own train photos.

    Returns:
        One row per task with a val pool: ``task``, ``val_images``, ``near_copies_of_train`` (val files with a
        near-copy among the task's train files), ``share`` (of ``val_images``), ``pairs`` (train-val pairs).
    """
    pools = _pool_sets(result)
    tasks = sorted({p.split("/")[0] for p in pools if p.endswith("/val")})
    rows = []
    for task in tasks:
        val, train = pools[f"{task}/val"], pools.get(f"{task}/train", set())
        linked = [(a, b) for a, b in result.pairs[["a", "b"]].itertuples(index=False, name=None)
                  if (a in train and b in val) or (b in train and a in val)]  # fmt: skip
        copies = {b if b in val else a for a, b in linked}
        rows.append(dict(task=task, val_images=len(val), near_copies_of_train=len(copies),
                         share=len(copies) / max(1, len(val)), pairs=len(linked)))  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "val_images", "near_copies_of_train", "share", "pairs"])


def leak_warning(leaks: pd.DataFrame, threshold: int, warn: bool = True) -> str:
    """The warning for val images that are near-copies of train photos (``""`` when there are none).

    Args:
        leaks: :func:`val_train_leaks`.
        threshold: The pHash threshold the pairs were found with (bits), named in the message.
        warn: Also raise it as a :class:`UserWarning` (shown in the notebook's output).
    """
    hits = leaks[leaks["near_copies_of_train"] > 0]
    if hits.empty:
        return ""
    parts = [f"{r.task}: {r.near_copies_of_train:,} of {r.val_images:,} val images ({r.share:.1%})"
             for r in hits.itertuples()]  # fmt: skip
    msg = (
        f"val holds near-copies of train photos (within {threshold} bits of pHash and dHash): "
        + "; ".join(parts)
        + ". Their validation score is optimistic: the model has seen these photos. Look at the pairs, "
        "then move or drop the copies (or keep them and read the score as an upper bound)."
    )
    if warn:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return msg


def _thumbnail(path: str, max_side: int) -> np.ndarray | None:
    try:
        width, height = image_size(path)
        return load_image(path, reduce=reduce_factor(max(width, height), max_side))
    except ImageLoadError:
        return None


def pair_gallery(result: NearDuplicates, pairs: pd.DataFrame, n: int = 8, per_row: int = 2,
                 max_side: int = 200) -> Figure:  # fmt: skip
    """The first ``n`` pairs of ``pairs`` side by side, each titled with its splits, names and distance.

    Args:
        result: What :func:`fh_utils.data.duplicates.find_near_duplicates` returned.
        pairs: :func:`pairs_table` (or a selection of its rows), shown in its order.
        n: Pairs shown.
        per_row: Pairs per row of the figure (two images each).
        max_side: Images are decoded at reduced size down to about this long side.
    """
    shown = pairs.head(n)
    nrows = max(1, -(-len(shown) // per_row))
    fig = Figure(figsize=(2.6 * 2 * per_row, 2.9 * nrows), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, 2 * per_row, squeeze=False)).reshape(-1, 2)
    for k, (ax_a, ax_b) in enumerate(axes):
        for ax in (ax_a, ax_b):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        if k >= len(shown):
            continue
        row = shown.iloc[k]
        for ax, side, pools in ((ax_a, row["a"], row["pools_a"]), (ax_b, row["b"], row["pools_b"])):
            img = _thumbnail(result.images.at[int(side), "path"], max_side)
            if img is not None:
                ax.imshow(img)
            name = str(result.images.at[int(side), "image_name"])
            ax.set_xlabel(f"{pools}\n{name[-28:]}", fontsize=7)
        ax_a.set_title(f"{row['kind']}, {row['distance']}/{row['dhash_distance']} bits", fontsize=8, loc="left")
    if shown.empty:
        axes[0][0].text(0.5, 0.5, "no near-copy pairs", ha="center", va="center", transform=axes[0][0].transAxes)
    fig.suptitle(f"Near-copies (pHash/dHash distance, threshold {result.threshold} bits): {len(pairs):,} pairs")
    return fig
