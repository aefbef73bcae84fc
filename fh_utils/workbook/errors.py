"""Notebook 08, error analysis: what a model gets wrong, how sure it was, and which labels are probably wrong.

Each function reads an :class:`~fh_utils.workbook.error_sets.ErrorSet`
(:func:`~fh_utils.workbook.error_sets.load_errors`): the worst losses per head, the misses per class (rarest class
first), the most confused pairs with their rows, every head's score beside the majority-class baseline's,
calibration (:mod:`fh_utils.scoring.calibration`) and the probable label errors
(:mod:`fh_utils.scoring.label_issues`) written as ``label_issues.csv``, which ``exclude`` in notebooks 03/04 takes
as it is (:mod:`fh_utils.data.exclude`). The figures are :mod:`fh_utils.workbook.error_plots`'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fh_utils.data.datasets import build_source
from fh_utils.io import atomic_write
from fh_utils.scoring.calibration import N_BINS, calibration_table
from fh_utils.scoring.label_issues import rank_label_issues
from fh_utils.tasks import Head
from fh_utils.training.metrics import confusion_matrix, task_metrics
from fh_utils.workbook.error_sets import ErrorSet
from fh_utils.workbook.evaluation import most_confused_pairs

LABEL_ISSUES_FILE = "label_issues.csv"
ROW_COLUMNS = ["index", "image_name", "source", "row", "fold", "true", "pred", "p_true", "p_pred", "loss"]


def rows_view(errors: ErrorSet, name: str, index: np.ndarray | list[int]) -> pd.DataFrame:
    """Rows of the frame for one head: :data:`ROW_COLUMNS` (class names, the true and predicted probability)."""
    h = errors.head(name)
    index = np.asarray(index, dtype=np.int64)
    sub = errors.frame.iloc[index]
    probs = errors.probabilities(name)[index]
    true, pred = sub[f"{h.key}_true"].to_numpy(), sub[f"{h.key}_pred"].to_numpy()
    names = np.asarray(h.class_names, dtype=object)
    return pd.DataFrame({
        "index": index, "image_name": sub["image_name"].to_numpy(), "source": sub["source"].to_numpy(),
        "row": sub["row"].to_numpy(), "fold": sub["fold"].to_numpy(), "true": names[np.clip(true, 0, None)],
        "pred": names[pred], "p_true": probs[np.arange(len(index)), np.clip(true, 0, None)],
        "p_pred": probs[np.arange(len(index)), pred], "loss": sub[f"{h.key}_loss"].to_numpy(),
    }, columns=ROW_COLUMNS)  # fmt: skip


def worst_losses(errors: ErrorSet, name: str, n: int = 12) -> pd.DataFrame:
    """The ``n`` rows of one head with the highest loss (``-log p(true)``), highest first (ties: frame order)."""
    h = errors.head(name)
    labelled = np.flatnonzero(errors.frame[f"{h.key}_true"].to_numpy() >= 0)
    loss = errors.frame[f"{h.key}_loss"].to_numpy()[labelled]
    order = labelled[np.argsort(-loss, kind="stable")]
    return rows_view(errors, name, order[:n]).reset_index(drop=True)


def misses_by_class(errors: ErrorSet, name: str, per_class: int = 4) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per class of one head, the rarest (in the training data) first: its misses, and its worst missed rows.

    Returns:
        ``(summary, {class name: up to per_class missed rows, highest loss first})``; ``summary`` has
        ``class``, ``train_rows`` (where from: ``counted_in``), ``rows`` (evaluated), ``misses``, ``accuracy``.
    """
    h = errors.head(name)
    counts, where = errors.class_counts(name)
    true, pred = errors.frame[f"{h.key}_true"].to_numpy(), errors.frame[f"{h.key}_pred"].to_numpy()
    loss = errors.frame[f"{h.key}_loss"].to_numpy()
    order = np.argsort(counts, kind="stable")
    rows, examples = [], {}
    for c in order:
        members = np.flatnonzero(true == c)
        missed = members[pred[members] != c]
        missed = missed[np.argsort(-loss[missed], kind="stable")]
        rows.append({"class": h.class_names[c], "train_rows": int(counts[c]), "counted_in": where,
                     "rows": len(members), "misses": len(missed),
                     "accuracy": 1 - len(missed) / len(members) if len(members) else float("nan")})  # fmt: skip
        examples[h.class_names[c]] = rows_view(errors, name, missed[:per_class])
    return pd.DataFrame(rows), examples


def confused_examples(
    errors: ErrorSet, name: str, top: int = 6, per_pair: int = 4
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The ``top`` most-confused pairs of one head and, per pair, its rows the model was surest of (highest loss).

    Returns:
        ``(pairs, {pair label "true → predicted": rows})``; ``pairs`` is
        :func:`fh_utils.workbook.evaluation.most_confused_pairs`'s frame.
    """
    h = errors.head(name)
    true, pred = errors.frame[f"{h.key}_true"].to_numpy(), errors.frame[f"{h.key}_pred"].to_numpy()
    keep = true >= 0
    pairs = most_confused_pairs(confusion_matrix(true[keep], pred[keep], h.num_classes), h.class_names, top)
    loss = errors.frame[f"{h.key}_loss"].to_numpy()
    examples = {}
    for p in pairs.itertuples():
        i, j = h.class_names.index(p.true), h.class_names.index(p.predicted)
        members = np.flatnonzero((true == i) & (pred == j))
        examples[p.label] = rows_view(errors, name, members[np.argsort(-loss[members], kind="stable")][:per_pair])
    return pairs, examples


def baseline_table(errors: ErrorSet) -> pd.DataFrame:
    """Every head's score beside the majority-class baseline's, and the task's score.

    The majority class is the most frequent class of the training data (:meth:`ErrorSet.class_counts`): what a
    model that learned nothing but the priors predicts for every photo. Per head ``score`` is the head's part of
    the task metric (top-1 for ST1, ACSA for ST2; a constant's ACSA is 1 / classes present), beside the other
    of the two; the last row is the task score with, for a run that has one, the colour baseline's
    (``metrics.json`` ``baseline_score``).
    """
    targets, preds = errors.targets(), errors.predictions()
    majority = np.zeros_like(preds)
    for j, h in enumerate(errors.task.heads):
        majority[:, j] = int(np.argmax(errors.class_counts(h.column)[0]))
    model, base = task_metrics(errors.task, targets, preds), task_metrics(errors.task, targets, majority)
    part = "top1" if errors.task.metric == "mean_top1" else "acsa"
    rows = []
    for j, h in enumerate(errors.task.heads):
        m, b = model["heads"][h.column], base["heads"][h.column]
        rows.append({"head": h.column, "score": m[part], "majority_score": b[part], "top1": m["top1"],
                     "majority_top1": b["top1"], "acsa": m["acsa"], "majority_acsa": b["acsa"],
                     "majority_class": h.class_names[int(majority[0, j])] if len(majority) else "",
                     "colour_baseline": None})  # fmt: skip
    rows.append({"head": f"task ({errors.task.metric})", "score": model["score"], "majority_score": base["score"],
                 "colour_baseline": errors.metrics.get("baseline_score")})  # fmt: skip
    return pd.DataFrame(rows, columns=["head", "score", "majority_score", "top1", "majority_top1", "acsa",
                                       "majority_acsa", "majority_class", "colour_baseline"])  # fmt: skip


def calibration(errors: ErrorSet, n_bins: int = N_BINS) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per head, accuracy, mean confidence and expected calibration error, and the reliability bins."""
    probs = {h.column: errors.probabilities(h.column) for h in errors.task.heads}
    return calibration_table(probs, errors.targets(), errors.task, n_bins)


def label_issues(errors: ErrorSet, name: str = "") -> pd.DataFrame:
    """Every labelled row of each head (or of ``name``) ranked by how probably its label is wrong (cleanlab).

    See :func:`fh_utils.scoring.label_issues.rank_label_issues`; ``coverage`` says whether the probabilities were
    out-of-fold (every row) or a run's validation rows only.
    """
    probs = {h.column: errors.probabilities(h.column) for h in errors.heads(name)}
    for h in errors.task.heads:  # heads left out still need an entry of the right shape
        probs.setdefault(h.column, np.zeros((len(errors.frame), h.num_classes)))
    ids = errors.frame[["image_name", "source", "row", "fold"]]
    return rank_label_issues(probs, errors.targets(), errors.task, ids, errors.coverage,
                             heads=[h.column for h in errors.heads(name)])  # fmt: skip


def write_label_issues(errors: ErrorSet, ranked: pd.DataFrame, path: str | Path | None = None) -> Path:
    """Write cleanlab's flagged rows as ``<run or sweep>/label_issues.csv``, a queue for a team to review.

    One row per flagged (head, row), most probable label error first per head, with ``exclude`` = 0: a reviewer
    sets it to 1 on the rows whose label is wrong, and ``exclude="<run>/label_issues.csv"`` in notebooks 03/04
    then trains without those. Nothing is excluded unreviewed: on real product photos, training without every
    flagged row (a quarter of the training rows, mostly multi-colour products and shade boundaries) cost 6.7
    points of ACSA on unseen photos (benchmarks/RESULTS.md).
    """
    path = Path(path) if path else errors.folder / LABEL_ISSUES_FILE
    flagged = ranked[ranked["flagged"]].drop(columns=["flagged"]).copy()
    flagged["exclude"] = 0
    atomic_write(path, lambda tmp: flagged.to_csv(tmp, index=False, float_format="%.4f"))
    return path


def crops(errors: ErrorSet, rows: pd.DataFrame, size: int = 128) -> list[np.ndarray]:
    """The RGB crops of ``rows`` (from :func:`rows_view`) as validation crops them (box, margin), ``size`` px.

    Raises:
        ValueError: A row's image name is not the data's at that row (the data changed since the run).
    """
    cfg = errors.data
    picked = []
    for source, row, name in zip(rows["source"], rows["row"], rows["image_name"]):
        found = errors.split_rows(str(source)).iloc[int(row)]
        if str(found["image_name"]) != str(name):
            raise ValueError(f"{errors.what}: row {int(row)} of {source} is {found['image_name']!r} in "
                             f"{cfg.data_root}, not {name!r}: the data changed since")  # fmt: skip
        picked.append(found)
    if not picked:
        return []
    source = build_source(pd.DataFrame(picked).reset_index(drop=True), size, cfg.crop_margin)
    return [source.get(k, cfg.crop_prob > 0) for k in range(len(picked))]


def dominant_color(crop: np.ndarray, centre: float = 0.5, levels: int = 8) -> tuple[int, int, int]:
    """The crop's dominant colour: the mean of the most populated of ``levels``³ colour cells of its centre.

    Only the central ``centre`` fraction of each side counts (the garment, not the background around the box).
    """
    h, w = crop.shape[:2]
    my, mx = int(h * (1 - centre) / 2), int(w * (1 - centre) / 2)
    pixels = crop[my : h - my or h, mx : w - mx or w, :3].reshape(-1, 3).astype(np.int64)
    cells = (pixels * levels // 256) @ np.array([levels * levels, levels, 1])
    top = np.bincount(cells).argmax()
    return tuple(int(v) for v in pixels[cells == top].mean(axis=0).round())


def class_colors(head: Head) -> dict[str, tuple[int, int, int]]:
    """An RGB swatch per colour class name (the demo palette's 18 FASHION-HOW colours); names it lacks have none."""
    from fh_utils.prep.demo.palette import demo_palette

    palette = demo_palette()
    return {name: palette[name] for name in head.class_names if name in palette}


def color_swatches(errors: ErrorSet, rows: pd.DataFrame, images: list[np.ndarray]) -> list[list[tuple[str, Any]]]:
    """Per row of a colour head: the true colour's, the predicted colour's and the crop's dominant colour swatch.

    Returns:
        ``[[("true", rgb or None), ("pred", rgb or None), ("crop", rgb)], ...]`` (None: a class without a swatch).
    """
    head = next(h for h in errors.task.heads if h.column == "Color")
    palette = class_colors(head)
    return [[("true", palette.get(t)), ("pred", palette.get(p)), ("crop", dominant_color(img))]
            for t, p, img in zip(rows["true"], rows["pred"], images)]  # fmt: skip


def is_color_head(errors: ErrorSet, name: str) -> bool:
    """Whether a head is ST2's colour head (its galleries get swatches)."""
    return errors.head(name).column == "Color"
