"""Calibration: does a 0.9 confidence mean right 9 times in 10? Reliability bins and the expected calibration error.

Confidence is the top class's probability (top-label calibration, Guo et al. 2017). Rows are put into
``n_bins`` equal-width bins of confidence, ``(low, high]`` (the first bin also holds 0); the expected calibration
error (ECE) is the rows-weighted mean gap between each bin's accuracy and its mean confidence:
``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``. Rows without a label (-1) are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fh_utils.tasks import Task

N_BINS = 15  # Guo et al.'s choice; on a few hundred val rows 10 gives steadier bins


def _labelled(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets).astype(np.int64).ravel()
    if probs.ndim != 2 or len(probs) != len(targets):
        raise ValueError(f"probabilities {probs.shape} and targets {targets.shape}: expected (N, C) and (N,)")
    keep = targets >= 0
    probs = probs[keep]
    # float16-stored probabilities drift from summing to 1 by ~1e-3: renormalise before reading confidences.
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    return probs, targets[keep]


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per confidence bin: ``low``, ``high``, ``rows``, ``confidence`` (mean), ``accuracy``, ``gap``.

    Args:
        probabilities: ``(N, C)`` class probabilities.
        targets: ``(N,)`` true classes (-1: no label, left out).
        n_bins: Equal-width bins over [0, 1].

    Empty bins have ``rows`` 0 and NaN confidence, accuracy and gap.
    """
    probs, targets = _labelled(probabilities, targets)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == targets) if len(probs) else np.zeros(0, dtype=bool)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum())
        conf = float(confidence[members].mean()) if n else float("nan")
        acc = float(correct[members].mean()) if n else float("nan")
        rows.append({"low": edges[b], "high": edges[b + 1], "rows": n, "confidence": conf, "accuracy": acc,
                     "gap": acc - conf})  # fmt: skip
    return pd.DataFrame(rows, columns=["low", "high", "rows", "confidence", "accuracy", "gap"])


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, n_bins: int = N_BINS) -> float:
    """The ECE of :func:`reliability_bins` (0: perfectly calibrated; NaN without labelled rows)."""
    bins = reliability_bins(probabilities, targets, n_bins)
    total = bins["rows"].sum()
    if total == 0:
        return float("nan")
    filled = bins[bins["rows"] > 0]
    return float((filled["rows"] / total * filled["gap"].abs()).sum())


def calibration_table(
    probabilities: dict[str, np.ndarray], targets: np.ndarray, task: Task, n_bins: int = N_BINS
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per head: rows, accuracy, mean confidence and ECE; and each head's reliability bins.

    Args:
        probabilities: ``{label column: (N, C)}``.
        targets: ``(N, n_heads)`` true classes, heads in the task's order.
        task: The task.
        n_bins: Bins of :func:`reliability_bins`.

    Returns:
        ``(table, {column: bins})``; ``table`` has ``head``, ``rows``, ``accuracy``, ``confidence``, ``ece``
        (``confidence`` above ``accuracy``: over-confident).
    """
    targets = np.asarray(targets).reshape(len(targets), -1)
    rows, bins = [], {}
    for j, head in enumerate(task.heads):
        probs, labels = _labelled(probabilities[head.column], targets[:, j])
        bins[head.column] = reliability_bins(probs, labels, n_bins)
        rows.append({"head": head.column, "rows": len(labels),
                     "accuracy": float((probs.argmax(axis=1) == labels).mean()) if len(labels) else float("nan"),
                     "confidence": float(probs.max(axis=1).mean()) if len(labels) else float("nan"),
                     "ece": expected_calibration_error(probs, labels, n_bins)})  # fmt: skip
    return pd.DataFrame(rows, columns=["head", "rows", "accuracy", "confidence", "ece"]), bins
