"""Notebook 08's figures: galleries of misses and of probable label errors, and the reliability diagram.

Galleries show crops with their true and predicted classes and probabilities, and for ST2 swatches of the true
colour, the predicted colour and the crop's dominant colour. Each function returns a
:class:`matplotlib.figure.Figure`, built without pyplot.

The rows come from :mod:`fh_utils.workbook.errors` (:func:`~fh_utils.workbook.errors.rows_view`'s columns), the
crops from :func:`~fh_utils.workbook.errors.crops`, the swatches from
:func:`~fh_utils.workbook.errors.color_swatches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fh_utils.workbook.error_sets import OUT_OF_FOLD, ErrorSet
from fh_utils.workbook.errors import (
    color_swatches,
    confused_examples,
    crops,
    is_color_head,
    misses_by_class,
    worst_losses,
)  # fmt: skip
from fh_utils.workbook.plots import BAD, OK, _figure, _image_axis

Swatches = Sequence[Sequence[tuple[str, Any]]]


def loss_captions(rows: pd.DataFrame) -> list[str]:
    """``true → pred``, both probabilities and the loss, one caption per row of ``rows_view``."""
    return [f"{r.true} → {r.pred}\np(true) {r.p_true:.2f}  p(pred) {r.p_pred:.2f}\nloss {r.loss:.2f}"
            for r in rows.itertuples()]  # fmt: skip


def issue_captions(ranked: pd.DataFrame) -> list[str]:
    """``#rank given → suggested`` with the self-confidence (and whether cleanlab flagged it), one caption per row."""
    return [f"#{r.rank} {r.head}: {r.given} → {r.suggested}?\np(given) {r.self_confidence:.2f}  "
            f"p(sugg.) {r.suggested_probability:.2f}{'  flagged' if r.flagged else ''}"
            for r in ranked.itertuples()]  # fmt: skip


def _swatch_row(ax, swatches: Sequence[tuple[str, Any]]) -> None:
    """Small squares under an image (axes coordinates): each a colour and its label; grey with '?' when None."""
    width = 1.0 / max(1, len(swatches))
    ax.set_xlabel("\n\n", fontsize=9)  # reserves the swatches' room below the image in the constrained layout
    for k, (label, rgb) in enumerate(swatches):
        color = np.asarray(rgb, dtype=float) / 255 if rgb is not None else (0.85, 0.85, 0.85)
        ax.add_patch(Rectangle((k * width + 0.02, -0.24), width - 0.04, 0.2, transform=ax.transAxes, clip_on=False,
                               facecolor=color, edgecolor="#444444", lw=0.6))  # fmt: skip
        light = rgb is None or float(np.mean(rgb)) > 140
        ax.text(k * width + width / 2, -0.14, label if rgb is not None else f"{label} ?", transform=ax.transAxes,
                ha="center", va="center", fontsize=6.5, color="black" if light else "white")  # fmt: skip


def gallery(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str,
    swatches: Swatches | None = None,
    ncols: int = 6,
    correct: Sequence[bool] | None = None,
) -> Figure:
    """Crops in a grid, each captioned; with ``swatches`` a row of colour squares under each crop.

    Args:
        images: RGB uint8 crops.
        captions: One per crop.
        title: The figure's title.
        swatches: Per crop ``[(label, rgb or None), ...]`` (ST2: true, predicted, the crop's dominant colour).
        ncols: Crops per row.
        correct: Per crop, whether the prediction was right (caption in green) or not (red); default: red.
    """
    n = len(images)
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, int(np.ceil(n / ncols)))
    fig = _figure(2.3 * ncols, (2.9 if swatches else 2.6) * nrows + 0.4)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        _image_axis(ax)
        ax.axis("off")
    if not n:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center", color="gray", transform=axes[0].transAxes)
    for k, (ax, img, caption) in enumerate(zip(axes, images, captions)):
        ax.axis("on")
        ax.imshow(img)
        ax.set_title(caption, fontsize=7, color=OK if correct is not None and correct[k] else BAD)
        if swatches:
            _swatch_row(ax, swatches[k])
    fig.suptitle(title)
    return fig


def grouped_gallery(
    groups: dict[str, tuple[Sequence[np.ndarray], Sequence[str], Swatches | None]],
    title: str,
    per_row: int = 4,
    notes: dict[str, str] | None = None,
) -> Figure:
    """One row of crops per group (a class's misses, a confused pair's rows), the group's name on the left.

    Args:
        groups: ``{name: (crops, captions, swatches or None)}``, in display order.
        title: The figure's title.
        per_row: Crops per row (a group's extra crops are not shown).
        notes: ``{name: text}`` under each group's name (e.g. its counts).
    """
    names = list(groups) or ["(none)"]
    has_swatches = any(g[2] for g in groups.values())
    fig = _figure(2.0 * per_row + 1.8, (2.7 if has_swatches else 2.4) * len(names) + 0.4)
    axes = np.asarray(fig.subplots(len(names), per_row, squeeze=False))
    for i, name in enumerate(names):
        images, captions, swatches = groups.get(name, ([], [], None))
        for k, ax in enumerate(axes[i]):
            _image_axis(ax)
            if k == 0:
                label = name + (f"\n{notes[name]}" if notes and name in notes else "")
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if k >= len(images):
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if k == 0:
                    ax.text(0.5, 0.5, "no misses", ha="center", va="center", color="gray", transform=ax.transAxes)
                continue
            ax.imshow(images[k])
            ax.set_title(captions[k], fontsize=6.5, color=BAD)
            if swatches:
                _swatch_row(ax, swatches[k])
    fig.suptitle(title)
    return fig


def reliability_diagram(bins: dict[str, pd.DataFrame], table: pd.DataFrame) -> Figure:
    """Accuracy against confidence per bin, one panel per head, with the diagonal and the ECE in each title.

    Args:
        bins: ``{head: reliability bins}`` (:func:`fh_utils.scoring.calibration.reliability_bins`).
        table: :func:`fh_utils.scoring.calibration.calibration_table`'s per-head table.
    """
    heads = list(bins)
    fig = _figure(3.6 * len(heads), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(heads)))
    for ax, head in zip(axes, heads):
        b = bins[head]
        filled = b[b["rows"] > 0]
        width = float(b["high"].iloc[0] - b["low"].iloc[0])
        centres = (filled["low"] + filled["high"]) / 2
        ax.bar(centres, filled["accuracy"], width=width * 0.95, color="#4C72B0", edgecolor="white", label="accuracy")
        ax.plot(centres, filled["confidence"], "_", color=BAD, markersize=14, mew=2, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        row = table[table["head"] == head].iloc[0]
        ax.set_title(f"{head}: ECE {row['ece']:.3f}\n(acc {row['accuracy']:.3f}, mean conf {row['confidence']:.3f})",
                     fontsize=9)  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top class probability)")
        ax.set_aspect("equal")
        for x, y, n in zip(centres, filled["accuracy"], filled["rows"]):
            ax.text(x, min(y + 0.02, 0.95), str(int(n)), ha="center", fontsize=6, color="#333333")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability: a bar below its confidence mark is over-confident (numbers: rows per bin)")
    return fig


def _parts(errors: ErrorSet, name: str, rows: pd.DataFrame, size: int) -> tuple[list, list[str], Swatches | None]:
    images = crops(errors, rows, size)
    swatches = color_swatches(errors, rows, images) if is_color_head(errors, name) else None
    return images, loss_captions(rows), swatches


def worst_loss_figure(errors: ErrorSet, name: str, n: int = 12, size: int = 128) -> Figure:
    """The ``n`` highest-loss rows of one head (:func:`~fh_utils.workbook.errors.worst_losses`), worst first."""
    rows = worst_losses(errors, name, n)
    images, captions, swatches = _parts(errors, name, rows, size)
    key = " (swatches: true, predicted, the crop's dominant colour)" if swatches else ""
    return gallery(images, captions, f"{name}: the {len(rows)} highest losses, worst first{key}", swatches,
                   correct=list(rows["true"] == rows["pred"]))  # fmt: skip


def misses_figure(errors: ErrorSet, name: str, per_class: int = 4, size: int = 128) -> tuple[Figure, pd.DataFrame]:
    """Each class's worst misses, one row per class, the rarest class (in training) first; and the summary."""
    summary, examples = misses_by_class(errors, name, per_class)
    groups = {c: _parts(errors, name, rows, size) for c, rows in examples.items() if len(rows)}
    notes = {r["class"]: f"{r['misses']}/{r['rows']} missed\n{r['train_rows']} in {r['counted_in']}"
             for r in summary.to_dict("records")}  # fmt: skip
    clean = len(summary) - len(groups)
    title = f"{name}: misses per class, rarest first" + (f" ({clean} classes without a miss left out)" if clean else "")
    return grouped_gallery(groups, title, max(1, per_class), notes), summary


def confused_figure(errors: ErrorSet, name: str, top: int = 6, per_pair: int = 4, size: int = 128
                    ) -> tuple[Figure, pd.DataFrame]:  # fmt: skip
    """The ``top`` most-confused pairs of one head, one row each with its surest wrong rows; and the pairs."""
    pairs, examples = confused_examples(errors, name, top, per_pair)
    groups = {label: _parts(errors, name, rows, size) for label, rows in examples.items()}
    notes = {p.label: f"{p.count} rows ({p.share:.0%})" for p in pairs.itertuples()}
    return grouped_gallery(groups, f"{name}: most confused pairs (true → predicted)", max(1, per_pair), notes), pairs


def label_issues_figure(errors: ErrorSet, ranked: pd.DataFrame, n: int = 12, size: int = 128) -> Figure:
    """The ``n`` rows cleanlab ranks most probably mislabelled (flagged first), with the label it suggests."""
    top = ranked.head(n).reset_index(drop=True)
    rows = top.rename(columns={"given": "true", "suggested": "pred"})
    images = crops(errors, rows, size)
    color = len(top) and all(is_color_head(errors, h) for h in top["head"])
    swatches = color_swatches(errors, rows, images) if color else None
    where = "every row (out-of-fold)" if errors.coverage == OUT_OF_FOLD else "validation rows only"
    none = "" if ranked["flagged"].any() else "; none flagged, the least confident shown"
    return gallery(images, issue_captions(top), f"Probable label errors ({where}{none}): given → suggested", swatches)
