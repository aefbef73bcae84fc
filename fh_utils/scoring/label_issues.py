"""Probable label errors: cleanlab's confident learning on out-of-sample probabilities, ranked per head.

``cleanlab.filter.find_label_issues`` (Northcutt et al. 2021) estimates the joint of given and true labels from
probabilities the model gave rows it never trained on, and flags the rows whose given label it most likely
got wrong; each row's self-confidence (its probability of the given label, cleanlab's label-quality score) ranks
them. The probabilities must be out-of-sample: a fold sweep's out-of-fold probabilities cover every row of train
and val; a single run's validation probabilities cover val only, and its training rows are never judged
(``coverage`` says which).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from fh_utils.tasks import Task

COVERAGES = ("out-of-fold", "val only")
ID_COLUMNS = ("image_name", "source", "row", "fold")
COLUMNS = ["rank", "head", *ID_COLUMNS, "given", "suggested", "self_confidence", "suggested_probability",
           "flagged", "coverage", "given_id", "suggested_id"]  # fmt: skip


def head_label_issues(probabilities: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Every labelled row of one head with cleanlab's verdict, the most probable label errors first.

    Args:
        probabilities: ``(N, C)`` out-of-sample class probabilities (renormalised here: float16 storage drifts).
        labels: ``(N,)`` given classes; -1 (no label) rows are left out.

    Returns:
        One row per labelled row: ``index`` (into the inputs), ``given_id``, ``suggested_id`` (the most probable
        class), ``self_confidence`` (the probability of the given class), ``suggested_probability``,
        ``flagged`` (cleanlab's ``find_label_issues``, pruned by noise rate). Flagged rows come first, then
        everything by self-confidence, lowest first.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probabilities {probs.shape} and labels {labels.shape}: expected (N, C) and (N,)")
    index = np.flatnonzero(labels >= 0)
    probs, labels = probs[index], labels[index]
    if len(labels) and labels.max() >= probs.shape[1]:
        raise ValueError(f"label {labels.max()} for {probs.shape[1]} classes")
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    flagged = np.zeros(len(labels), dtype=bool)
    quality = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    # cleanlab needs two classes among the given labels and rows enough to estimate their noise rates.
    if len(labels) >= 2 and len(np.unique(labels)) >= 2:
        with warnings.catch_warnings():  # "too few examples in class k": rare classes are the point here
            warnings.simplefilter("ignore")
            flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
            quality = get_label_quality_scores(labels, probs, method="self_confidence")
    suggested = probs.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame({"index": index, "given_id": labels, "suggested_id": suggested,
                          "self_confidence": quality,
                          "suggested_probability": probs.max(axis=1) if len(labels) else np.zeros(0),
                          "flagged": np.asarray(flagged, dtype=bool)})  # fmt: skip
    return frame.sort_values(["flagged", "self_confidence"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def rank_label_issues(
    probabilities: dict[str, np.ndarray],
    targets: np.ndarray,
    task: Task,
    ids: pd.DataFrame,
    coverage: str,
    heads: list[str] | None = None,
) -> pd.DataFrame:
    """Every labelled row of every head (or of ``heads``), ranked per head as :func:`head_label_issues` ranks them.

    Args:
        probabilities: ``{label column: (N, C)}`` out-of-sample probabilities.
        targets: ``(N, n_heads)`` given classes, heads in the task's order.
        task: The task (class names).
        ids: ``(N,)`` rows' identity: ``image_name`` and, when known, ``source``, ``row``, ``fold``.
        coverage: ``"out-of-fold"`` (every row of train and val) or ``"val only"`` (a run's validation rows).
        heads: Label columns or keys to rank (default: all).

    Returns:
        :data:`COLUMNS`: ``rank`` (1 = most probably mislabelled, per head), ``head``, the ids, ``given`` and
        ``suggested`` class names, ``self_confidence``, ``suggested_probability``, ``flagged``, ``coverage``,
        and the class ids.
    """
    if coverage not in COVERAGES:
        raise ValueError(f"coverage must be one of {COVERAGES}, got {coverage!r}")
    targets = np.asarray(targets).reshape(len(targets), -1)
    wanted = [task.head(h) for h in heads] if heads else list(task.heads)
    frames = []
    for head in wanted:
        j = task.heads.index(head)
        ranked = head_label_issues(probabilities[head.column], targets[:, j])
        names = np.asarray(head.class_names, dtype=object)
        part = pd.DataFrame({"rank": np.arange(1, len(ranked) + 1), "head": head.column})
        for column in ID_COLUMNS:
            part[column] = (ids[column].to_numpy()[ranked["index"]] if column in ids
                            else (-1 if column in ("row", "fold") else ""))  # fmt: skip
        part["given"], part["suggested"] = names[ranked["given_id"]], names[ranked["suggested_id"]]
        for column in ("self_confidence", "suggested_probability", "flagged", "given_id", "suggested_id"):
            part[column] = ranked[column].to_numpy()
        part["coverage"] = coverage
        frames.append(part[COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
