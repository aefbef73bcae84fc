"""Competition metrics: per-head top-1, per-class accuracy, ACSA and the task score.

Built on a NumPy confusion matrix (the packaged submission scores its dry run with this module, and the
scoring server's Python has no scikit-learn); ACSA (average class-specific accuracy) is the mean over the
classes present in the labels of their recall, i.e. scikit-learn's balanced accuracy (a test checks both).
"""

from __future__ import annotations

import numpy as np

from fh_utils.tasks import Task


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts; rows are true classes, columns predictions.

    Pairs with a class outside ``0..num_classes-1`` are left out, as scikit-learn does with ``labels=``.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    keep = (y_true >= 0) & (y_true < num_classes) & (y_pred >= 0) & (y_pred < num_classes)
    flat = y_true[keep] * num_classes + y_pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy (recall) of each class; NaN for classes absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def acsa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Average class-specific accuracy: mean of per-class accuracies over the classes present."""
    return float(np.nanmean(per_class_accuracy(y_true, y_pred, num_classes)))


def top1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def task_metrics(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Every metric of a task for ``(N, n_heads)`` label and prediction arrays.

    Returns:
        ``{"score": task score, "heads": {column: {"top1", "acsa", "per_class": {name: acc}}}}``; the score
        is the mean top-1 over heads (ST1) or the ACSA of the head (ST2).
    """
    y_true, y_pred = np.asarray(y_true).reshape(len(y_true), -1), np.asarray(y_pred).reshape(len(y_pred), -1)
    heads = {}
    for j, head in enumerate(task.heads):
        acc = per_class_accuracy(y_true[:, j], y_pred[:, j], head.num_classes)
        heads[head.column] = {
            "top1": top1(y_true[:, j], y_pred[:, j]),
            "acsa": float(np.nanmean(acc)),
            "per_class": {n: (None if np.isnan(a) else float(a)) for n, a in zip(head.class_names, acc)},
        }
    if task.metric == "mean_top1":
        score = float(np.mean([h["top1"] for h in heads.values()]))
    elif task.metric == "acsa":
        score = float(np.mean([h["acsa"] for h in heads.values()]))
    else:
        raise ValueError(f"unknown metric {task.metric!r}")
    return {"score": score, "heads": heads}
