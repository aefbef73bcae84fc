"""Every figure of the workbook. Each function returns a :class:`matplotlib.figure.Figure`.

Figures are built without pyplot (no global state, no ``plt.show``): safe under Agg and in headless papermill
runs. A notebook shows one with ``display(fig)`` and saves it with :func:`fh_utils.runs.save_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fh_utils.data.cache import reduce_factor
from fh_utils.data.images import load_image
from fh_utils.data.reader import BOX_COLUMNS
from fh_utils.tasks import Head, Task
from fh_utils.training.metrics import confusion_matrix
from fh_utils.workbook.eda import imbalance_ratio

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
OK, BAD = "#1a7f37", "#cf222e"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _image_axis(ax, frame: bool = False) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame)
        spine.set_edgecolor("#bbbbbb")


def class_counts(counts: pd.DataFrame, task: Task) -> Figure:
    """Grouped bars of rows per class, train vs val, one panel per head; imbalance ratio in each title.

    Args:
        counts: :func:`fh_utils.workbook.eda.count_table` of the task.
        task: The task (its heads, in order).
    """
    splits = list(dict.fromkeys(counts["split"]))
    widths = [max(6.0, 0.55 * h.num_classes * len(splits) + 2) for h in task.heads]
    fig = _figure(max(widths), 3.4 * len(task.heads))
    axes = np.atleast_1d(fig.subplots(len(task.heads), 1))
    bar = 0.8 / len(splits)
    for ax, head in zip(axes, task.heads):
        sub = counts[counts["head"] == head.column]
        x = np.arange(head.num_classes)
        ratios = []
        for k, split in enumerate(splits):
            c = sub[sub["split"] == split].sort_values("class_id")["count"].to_numpy()
            bars = ax.bar(x + (k - (len(splits) - 1) / 2) * bar, c, bar, label=f"{split} ({c.sum():,})",
                          color=SPLIT_COLORS.get(split))  # fmt: skip
            ax.bar_label(bars, fontsize=7, padding=1)
            ratio = imbalance_ratio(c)
            ratios.append(f"{split} {ratio:.1f}:1" if np.isfinite(ratio) else f"{split} ∞ (a class has 0 rows)")
        ax.set_xticks(x, [f"{i} {n}" for i, n in enumerate(head.class_names)], rotation=30, ha="right")
        ax.set_ylabel("rows")
        ax.set_title(f"{task.name.upper()} {head.column}: rows per class — imbalance max/min: {', '.join(ratios)}")
        ax.legend(fontsize=8)
        ax.margins(y=0.12)
    return fig


def cooccurrence_heatmaps(tables: dict[tuple[str, str], pd.DataFrame], title: str = "ST1 train") -> Figure:
    """One annotated count heatmap per pair of heads (from :func:`fh_utils.workbook.eda.cooccurrence_tables`)."""
    fig = _figure(5.2 * len(tables), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(tables)))
    for ax, ((a, b), table) in zip(axes, tables.items()):
        sns.heatmap(table, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, annot_kws={"fontsize": 8})
        ax.set_title(f"{a} × {b} (rows)")
        ax.set_ylabel(a)
        ax.set_xlabel(b)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{title}: how often two labels occur together")
    return fig


def box_histograms(stats: pd.DataFrame) -> Figure:
    """Histograms of box width, height, aspect and relative area, train vs val (``eda.box_stats_all``)."""
    panels = [("box_width", "box width, px", False), ("box_height", "box height, px", False),
              ("aspect", "aspect = width / height", False),
              ("rel_area", "box area / image area", False)]  # fmt: skip
    fig = _figure(12, 7)
    axes = fig.subplots(2, 2).ravel()
    hue = "split" if stats["split"].nunique() > 1 else None
    palette = {s: SPLIT_COLORS.get(s, "gray") for s in stats["split"].unique()}
    for ax, (col, label, log) in zip(axes, panels):
        data = stats.dropna(subset=[col])
        sns.histplot(data, x=col, hue=hue, palette=palette if hue else None, element="step", stat="density",
                     common_norm=False, log_scale=log, bins=40, ax=ax)  # fmt: skip
        median = data[col].median()
        ax.axvline(median, color="k", ls="--", lw=1)
        ax.set_title(f"{label} — median {median:.3g}")
        ax.set_xlabel(label)
    fig.suptitle(f"Bounding boxes ({len(stats):,} distinct boxes)")
    return fig


def image_sizes(stats: pd.DataFrame) -> Figure:
    """Stored image sizes: width vs height scatter and a histogram of the long side (one point per image)."""
    images = stats.drop_duplicates(subset=["split", "image_name"]).dropna(subset=["image_width"])
    fig = _figure(12, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    for split, sub in images.groupby("split"):
        ax1.scatter(sub["image_width"], sub["image_height"], s=8, alpha=0.4, label=f"{split} ({len(sub):,})",
                    color=SPLIT_COLORS.get(split))  # fmt: skip
    ax1.set_xlabel("image width, px")
    ax1.set_ylabel("image height, px")
    sizes = images[["image_width", "image_height"]].drop_duplicates()
    only = f": all {sizes.iloc[0, 0]:.0f} × {sizes.iloc[0, 1]:.0f} px" if len(sizes) == 1 else ""
    ax1.set_title(f"Image size (one point per image){only}")
    ax1.legend(fontsize=8)
    long_side = np.maximum(images["image_width"], images["image_height"])
    ax2.hist(long_side, bins=40, color="#4C72B0")
    ax2.set_xlabel("long side, px")
    ax2.set_ylabel("images")
    ax2.set_title(f"Long side — median {np.median(long_side):.0f} px, max {long_side.max():.0f} px")
    return fig


def class_sample_grid(samples: dict[int, pd.DataFrame], head: Head, n: int, max_side: int = 320) -> Figure:
    """Random images of each class (rows) with the labelled box drawn in yellow.

    Args:
        samples: ``{class id: rows}`` from :func:`fh_utils.workbook.eda.sample_per_class`.
        head: The head whose classes make the rows.
        n: Images per row.
        max_side: Images are decoded at reduced size down to about this long side.
    """
    fig = _figure(1.7 * n + 1.2, 1.8 * head.num_classes)
    axes = np.asarray(fig.subplots(head.num_classes, n, squeeze=False))
    for cid, row_axes in enumerate(axes):
        rows = samples.get(cid, pd.DataFrame())
        for k, ax in enumerate(row_axes):
            _image_axis(ax)
            if k == 0:
                ax.set_ylabel(f"{cid} {head.class_names[cid]}", rotation=0, ha="right", va="center", fontsize=10)
            if k >= len(rows):
                if k == 0:
                    ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes, color="gray")
                continue
            row = rows.iloc[k]
            reduce = reduce_factor(max(int(row["width"]), int(row["height"])), max_side)
            img = load_image(row["path"], reduce=reduce)
            x0, y0, x1, y1 = (row[c] / reduce for c in BOX_COLUMNS)
            ax.imshow(img)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5))
    fig.suptitle(f"{head.column}: sample images per class (box in yellow)")
    return fig


def color_swatches(class_colors: pd.DataFrame, box_colors: pd.DataFrame | None = None) -> Figure:
    """Mean garment colour of each class (big square) over the colours of its sampled boxes (stripes).

    Args:
        class_colors: :func:`fh_utils.workbook.eda.class_mean_colors`.
        box_colors: :func:`fh_utils.workbook.eda.sample_box_colors` (the per-box stripes); optional.
    """
    n = len(class_colors)
    fig = _figure(max(8.0, 0.75 * n), 3.2)
    ax = fig.subplots()
    for i, row in class_colors.iterrows():
        if row["n"] == 0:
            ax.text(i, 0.5, "none", ha="center", va="center", fontsize=8, color="gray")
            continue
        ax.add_patch(Rectangle((i - 0.45, 0.05), 0.9, 0.9, color=np.array([row.r, row.g, row.b]) / 255, ec="k", lw=0.5))
        if box_colors is not None:
            boxes = box_colors[box_colors["class_id"] == row["class_id"]][["r", "g", "b"]].to_numpy() / 255
            step = 0.9 / max(1, len(boxes))
            for k, rgb in enumerate(boxes):
                ax.add_patch(Rectangle((i - 0.45 + k * step, -0.75), step, 0.7, color=rgb, lw=0))
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(-0.85, 1.0)
    ax.set_xticks(range(n), [f"{r.class_name}\n(n={r.n})" for r in class_colors.itertuples()], rotation=45,
                  ha="right", fontsize=9)  # fmt: skip
    ax.set_yticks([0.5, -0.4], ["class mean", "each box"])
    ax.set_aspect("equal")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("Mean garment colour per class (centre half of each box)")
    return fig


def _label_text(task: Task, labels: Sequence[int]) -> str:
    return " / ".join(h.class_names[int(c)] if 0 <= int(c) < h.num_classes else "?" for h, c in zip(task.heads, labels))


def augmented_batch(images, labels, task: Task, n: int = 16, ncols: int = 8) -> Figure:
    """A training batch as the network sees it (before normalisation), titled with its class names.

    Args:
        images: uint8 ``(B, C, H, W)`` tensor or array; with more than 3 channels (stacked colour spaces) the
            first 3 are shown.
        labels: ``(B, n_heads)`` class ids.
        task: The task (class names).
        n: Images shown.
        ncols: Images per row.
    """
    images, labels = np.asarray(images)[:n], np.asarray(labels)[:n]
    nrows = int(np.ceil(len(images) / ncols))
    fig = _figure(1.9 * ncols, 2.1 * nrows)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        _image_axis(ax)
    for ax, img, y in zip(axes, images, labels):
        ax.imshow(img[:3].transpose(1, 2, 0).astype(np.uint8))
        ax.set_title(_label_text(task, y), fontsize=7)
    extra = f", first 3 of {images.shape[1]} channels" if images.shape[1] > 3 else ""
    fig.suptitle(f"Augmented training batch ({images.shape[-1]} px{extra}); titles: {' / '.join(task.label_columns)}")
    return fig


def training_curves(history: pd.DataFrame, task: Task) -> Figure:
    """Loss (train/val), per-head validation accuracy, task score and learning rate per epoch."""
    fig = _figure(12, 7.5)
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    ep = history["epoch"]
    ax1.plot(ep, history["train_loss"], "o-", label="train")
    ax1.plot(ep, history["val_loss"], "o-", label="val")
    ax1.set_title("Loss (sum over heads, label-smoothed CE)")
    kind = "acsa" if task.metric == "acsa" else "top1"
    for head in task.heads:
        ax2.plot(ep, history[f"val_{head.column}_{kind}"], "o-", label=head.column)
    ax2.set_title(f"Validation {'mean per-class accuracy' if kind == 'acsa' else 'top-1 accuracy'} per head")
    best = history["val_score"].idxmax()
    ax3.plot(ep, history["val_score"], "o-", color="#55A868")
    ax3.plot(ep[best], history["val_score"][best], "*", ms=14, color="#C44E52",
             label=f"best {history['val_score'][best]:.4f} (epoch {ep[best]})")  # fmt: skip
    ax3.set_title(f"Task score on val ({task.metric})")
    ax4.plot(ep, history["lr"], "o-", color="#8172B3")
    ax4.set_yscale("log")
    ax4.set_title("Learning rate (end of epoch)")
    for ax, ylabel in ((ax1, "loss"), (ax2, "accuracy"), (ax3, "score"), (ax4, "lr")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{task.name.upper()} training curves")
    return fig


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, task: Task, title: str = "val") -> Figure:
    """Row-normalised confusion matrix of each head, with class names (rows: true, columns: predicted)."""
    y_true, y_pred = np.asarray(y_true).reshape(len(y_true), -1), np.asarray(y_pred).reshape(len(y_pred), -1)
    sizes = [max(4.5, 0.55 * h.num_classes + 2.5) for h in task.heads]
    fig = _figure(sum(sizes) + 0.5, max(sizes))
    axes = np.atleast_1d(fig.subplots(1, len(task.heads), width_ratios=sizes))
    for j, (ax, head) in enumerate(zip(axes, task.heads)):
        cm = confusion_matrix(y_true[:, j], y_pred[:, j], head.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = cm / cm.sum(axis=1, keepdims=True)
        names = list(head.class_names)
        sns.heatmap(pd.DataFrame(norm, index=names, columns=names), annot=True, fmt=".0%", vmin=0, vmax=1,
                    cmap="Blues", cbar=False, square=True, ax=ax,
                    annot_kws={"fontsize": 7 if head.num_classes > 8 else 9})  # fmt: skip
        acc = np.trace(cm) / max(1, cm.sum())
        ax.set_title(f"{head.column}: top-1 {acc:.3f} (n={cm.sum():,})")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.suptitle(f"{task.name.upper()} confusion matrices on {title} (each row sums to 100%)")
    return fig


def per_class_accuracy(
    per_class: dict[str, Sequence[float | None]],
    task: Task,
    compare: dict[str, Sequence[float | None]] | None = None,
    labels: tuple[str, str] = ("network", "colour baseline"),
) -> Figure:
    """Accuracy of every class, one panel per head; optionally a second series side by side.

    Args:
        per_class: ``{head column: accuracy per class}`` (a list in class order, or ``{name: acc}``).
        task: The task.
        compare: Same shape, e.g. the colour baseline's ``baseline_per_class``.
        labels: Legend names of the two series.
    """

    def values(src, head: Head) -> np.ndarray:
        v = src[head.column]
        v = [v.get(n) for n in head.class_names] if isinstance(v, dict) else list(v)
        return np.array([np.nan if a is None else a for a in v], dtype=float)

    heads = [h for h in task.heads if h.column in per_class]
    fig = _figure(max(8.0, 0.5 * max(h.num_classes for h in heads) + 3), 3.6 * len(heads))
    axes = np.atleast_1d(fig.subplots(len(heads), 1))
    for ax, head in zip(axes, heads):
        series = [(labels[0], values(per_class, head), "#4C72B0")]
        if compare is not None and head.column in compare:
            series.append((labels[1], values(compare, head), "#999999"))
        width = 0.8 / len(series)
        x = np.arange(head.num_classes)
        for k, (name, acc, color) in enumerate(series):
            bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(acc), width, color=color,
                          label=f"{name} (mean {np.nanmean(acc):.3f})")  # fmt: skip
            ax.bar_label(bars, labels=["" if np.isnan(a) else f"{a:.2f}" for a in acc], fontsize=6, padding=1)
            ax.axhline(np.nanmean(acc), color=color, ls="--", lw=1)
        ax.set_xticks(x, head.class_names, rotation=30, ha="right")
        ax.set_ylim(0, 1.3)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("accuracy (recall)")
        ax.set_title(f"{head.column}: accuracy per class (dashed: mean over classes)")
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    return fig


def confused_pairs(pairs: dict[str, pd.DataFrame]) -> Figure:
    """Horizontal bars of the most frequent "true → predicted" mistakes, one panel per head.

    Args:
        pairs: ``{head column: most_confused_pairs(...)}``.
    """
    heights = [max(1.6, 0.32 * len(p) + 0.9) for p in pairs.values()]
    fig = _figure(8, sum(heights))
    axes = np.atleast_1d(fig.subplots(len(pairs), 1, height_ratios=heights))
    for ax, (column, p) in zip(axes, pairs.items()):
        if p.empty:
            ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(f"{column}: most confused pairs")
            continue
        y = np.arange(len(p))[::-1]
        bars = ax.barh(y, p["count"], color="#C44E52")
        ax.bar_label(bars, labels=[f"{c} ({s:.0%} of true class)" for c, s in zip(p["count"], p["share"])],
                     fontsize=8, padding=2)  # fmt: skip
        ax.set_yticks(y, p["label"])
        ax.set_xlabel("images")
        ax.margins(x=0.3)
        ax.set_title(f"{column}: most confused pairs (true → predicted)")
    return fig


def prediction_grid(
    images: Sequence[np.ndarray], truths: Sequence[Sequence[str]], preds: Sequence[Sequence[str]],
    heads: Sequence[str], ncols: int = 6, title: str = "Predictions on val",
) -> Figure:  # fmt: skip
    """Images with one line per head: green when right ("Office"), red when wrong ("Office → pred Formal")."""
    nrows = int(np.ceil(len(images) / ncols))
    fig = _figure(2.3 * ncols, (2.3 + 0.22 * len(heads)) * nrows)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        _image_axis(ax)
    for ax, img, t, p in zip(axes, images, truths, preds):
        ax.imshow(img)
        for k, (head, tt, pp) in enumerate(zip(heads, t, p)):
            text = f"{head}: {tt}" if tt == pp else f"{head}: {tt} → pred {pp}"
            ax.text(0.5, -0.03 - 0.11 * k, text, transform=ax.transAxes, ha="center", va="top", fontsize=7,
                    color=OK if tt == pp else BAD)  # fmt: skip
    fig.suptitle(f"{title} (green: right; red: true → predicted)")
    return fig


def attention_grid(images: Sequence[np.ndarray], maps: np.ndarray, title: str = "Where fh_colornet looks") -> Figure:
    """One row per image: the crop, then each attention map over it (bright: pixels whose colour counts).

    Args:
        images: RGB crops at the model's input size.
        maps: Attention weights ``(n, maps, H, W)`` (:func:`fh_utils.workbook.workflow.attention_samples`).
        title: Figure title.
    """
    n, m = maps.shape[:2]
    fig = _figure(1.6 * (m + 1), 1.6 * n)
    axes = np.asarray(fig.subplots(n, m + 1, squeeze=False))
    for row, (img, img_maps) in enumerate(zip(images, maps)):
        _image_axis(axes[row, 0])
        axes[row, 0].imshow(img)
        for k, weights in enumerate(img_maps):
            ax = axes[row, k + 1]
            _image_axis(ax)
            ax.imshow(img)
            ax.imshow(weights / max(float(weights.max()), 1e-12), cmap="magma", alpha=0.65, vmin=0, vmax=1)
            if row == 0:
                ax.set_title(f"map {k + 1}", fontsize=8)
    axes[0, 0].set_title("crop", fontsize=8)
    fig.suptitle(title)
    return fig


def before_after_grid(pairs: Sequence[tuple[np.ndarray, np.ndarray]], ncols: int = 4) -> Figure:
    """Original and background-removed image side by side, ``ncols`` pairs per row."""
    nrows = max(1, int(np.ceil(len(pairs) / ncols)))
    fig = _figure(3.4 * ncols, 2.4 * nrows)
    axes = np.asarray(fig.subplots(nrows, 2 * ncols, squeeze=False)).ravel()
    for ax in axes:
        _image_axis(ax, frame=True)
    for k, (orig, nobg) in enumerate(pairs):
        for ax, img, name in ((axes[2 * k], orig, "original"), (axes[2 * k + 1], nobg, "background removed")):
            ax.imshow(img)
            ax.set_title(name, fontsize=8)
    fig.suptitle("Background removal: before / after")
    return fig
