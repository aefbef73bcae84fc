"""Evaluation of a trained run, for notebooks 03/04.

Saved predictions, per-class accuracy against the colour baseline, most-confused pairs, figure samples
(predictions, attention maps) and the closing score report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from fh_utils.data.datasets import FashionHowDataset
from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.runs import BEST_CKPT, METRICS_FILE, PREDICTIONS_FILE
from fh_utils.scoring.report import ESTIMATES_KEY, describe
from fh_utils.tasks import Task
from fh_utils.training.metrics import confusion_matrix

if TYPE_CHECKING:
    from fh_utils.workbook.workflow import RunSetup


def per_class_series(result: dict, run_dir: str | Path, task: Task) -> tuple[dict, dict | None]:
    """Per-class accuracies of an evaluation and, if the run has one, of its colour baseline (first head)."""
    per_class = {column: head["per_class"] for column, head in result["heads"].items()}
    metrics_path = Path(run_dir) / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    baseline = metrics.get("baseline_per_class")
    return per_class, ({task.heads[0].column: baseline} if baseline else None)


def save_predictions(run_dir: str | Path, dataset: FashionHowDataset, result: dict, task: Task) -> Path:
    """Write ``val_predictions.csv``: every val row's classes, loss and probabilities.

    Columns: ``image_name``, then per head ``<key>_true``, ``<key>_pred``, ``<key>_loss`` (the row's
    cross-entropy, ``-log p(true)``, the probability floored at 1e-7) and ``<key>_p_<class name>`` (when
    ``result`` holds ``probabilities``), so any error can be looked at and re-scored later without the model.
    """
    frame = pd.DataFrame({"image_name": dataset.df["image_name"].to_numpy()})
    probabilities = result.get("probabilities") or {}
    for j, head in enumerate(task.heads):
        frame[f"{head.key}_true"] = result["targets"][:, j]
        frame[f"{head.key}_pred"] = result["predictions"][:, j]
        probs = probabilities.get(head.column)
        if probs is None:
            continue
        probs = np.asarray(probs, dtype=np.float64)
        truth = np.clip(result["targets"][:, j], 0, probs.shape[1] - 1)
        frame[f"{head.key}_loss"] = -np.log(np.maximum(probs[np.arange(len(probs)), truth], 1e-7))
        for c, name in enumerate(head.class_names):
            frame[f"{head.key}_p_{name}"] = probs[:, c]
    path = Path(run_dir) / PREDICTIONS_FILE
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


def prediction_samples(
    dataset: FashionHowDataset, result: dict, task: Task, n: int = 18, seed: int = 0
) -> tuple[list[np.ndarray], list[list[str]], list[list[str]], list[str]]:
    """Random evaluation rows for :func:`fh_utils.workbook.plots.prediction_grid`: crops, true and predicted names."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    crop = dataset.crop_prob > 0
    images = [dataset.source.get(int(i), crop) for i in idx]
    names = [[h.class_names[int(c)] for h, c in zip(task.heads, row)] for row in result["targets"][idx]]
    preds = [[h.class_names[int(c)] for h, c in zip(task.heads, row)] for row in result["predictions"][idx]]
    return images, names, preds, task.label_columns


def attention_samples(
    model: torch.nn.Module, dataset: FashionHowDataset, n: int = 6, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Evaluation crops and the attention maps of a backbone that has them (``fh_colornet``), else ``None``.

    Returns:
        RGB crops at the model's input size, and their maps ``(n, maps, H, W)`` for
        :func:`fh_utils.workbook.plots.attention_grid`.
    """
    backbone = getattr(model, "backbone", None)
    if not hasattr(backbone, "attention_maps"):
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    x = torch.stack([dataset[int(i)][0] for i in idx])
    device = next(model.parameters()).device
    with torch.no_grad():
        maps = backbone.attention_maps(model.normalize(x.to(device))).float().cpu().numpy()
    spaces = list(model.input_config.get("color_spaces", ["rgb"]))
    if "rgb" in spaces:
        first = 3 * spaces.index("rgb")
        images = [img[first : first + 3].permute(1, 2, 0).numpy() for img in x]
    else:
        import cv2

        size = x.shape[-2:][::-1]
        images = [cv2.resize(dataset.source.get(int(i), dataset.crop_prob > 0), size) for i in idx]
    return images, maps


def record_tta(run_dir: str | Path, tta: str, result: dict) -> dict:
    """Add the final evaluation's TTA mode and score to ``metrics.json`` (``"tta"``, ``"tta_score"``).

    ``"score"`` stays the training's (no TTA); notebook 05 with the same ``tta`` scores ``"tta_score"``.
    """
    path = Path(run_dir) / METRICS_FILE
    metrics = read_json(path) if path.exists() else {}
    metrics.update(tta=tta, tta_score=result["score"])
    write_json(path, metrics)
    return metrics


def evaluate_checkpoint(setup: RunSetup, loaders: dict, device: torch.device | str) -> tuple[torch.nn.Module, dict]:
    """Notebooks 03/04's final evaluation: reload the run's checkpoint, score val with the run's TTA, record it.

    The checkpoint is the one the run's rule saved (``best.pt``, ``final.pt`` or ``averaged.pt``), loaded and
    checked by :func:`fh_utils.inference.loading.load_for_prediction` and wrapped by
    :class:`fh_utils.inference.predictor.Predictor`: the road notebook 05 and the packaged submission take.
    ``metrics.json`` gets ``tta`` / ``tta_score`` and ``val_predictions.csv`` is written.

    Returns:
        The checkpoint's model and the :func:`fh_utils.training.engine.evaluate` result.
    """
    from fh_utils.inference.loading import load_for_prediction
    from fh_utils.inference.predictor import Predictor

    loaded = load_for_prediction(setup.run_dir, setup.task.name, size_budget=False)
    predictor = Predictor(loaded.members, setup.run["tta"], device=device)
    val = predictor.evaluate(loaders["val"])
    record_tta(setup.run_dir, predictor.tta, val)
    save_predictions(setup.run_dir, loaders["val"].dataset, val, setup.task)
    return predictor.members[0].model, val


def no_validation_message(setup: RunSetup) -> str:
    """What the val cells of notebooks 03/04 print when the run had no validation (``split="full"``)."""
    return (f"split={setup.data.split!r}: trained on train + val without validation, so there is no val score "
            "or figure")  # fmt: skip


def score_report(run_dir: str | Path, result: dict | None = None) -> str:
    """The closing lines of a training notebook.

    The best validation score, the colour baseline's (ST2), and the honest numbers beside them
    (:func:`fh_utils.scoring.report.describe`: the one to trust, and why).
    """
    m = read_json(Path(run_dir) / METRICS_FILE)
    lines = [f"{m['task'].upper()} best val score ({m['metric']}): {m['score']:.4f} at epoch {m['epoch']}"]
    saved = m.get("checkpoint") or {"rule": "best", "file": BEST_CKPT}
    if result is not None:
        lines.append(f"re-evaluated {saved['file']} (checkpoint rule {saved['rule']!r}, tta {m.get('tta', 'none')}): "
                     f"{result['score']:.4f}")  # fmt: skip
    if m.get("baseline_score") is not None:
        lines.append(f"colour baseline (histograms + logistic regression): {m['baseline_score']:.4f}")
    if m.get(ESTIMATES_KEY):
        lines += ["", "Which number to trust:", describe(m[ESTIMATES_KEY])]
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


def most_confused_pairs(cm: np.ndarray, class_names: tuple[str, ...] | list[str], top: int = 10) -> pd.DataFrame:
    """The largest off-diagonal cells of a confusion matrix (rows = true classes).

    Returns:
        Up to ``top`` rows, largest first: ``true``, ``predicted``, ``count``, ``share`` (of the true class's
        rows), ``label`` (``"true → predicted"``). Pairs with count 0 are left out.
    """
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    rows = [dict(true=class_names[i], predicted=class_names[j], count=int(cm[i, j]),
                 share=float(cm[i, j] / support[i]), label=f"{class_names[i]} → {class_names[j]}")
            for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["true", "predicted", "count", "share", "label"])
    return frame.sort_values(["count", "share"], ascending=False, kind="stable").head(top).reset_index(drop=True)


def confused_pairs_by_head(
    y_true: np.ndarray, y_pred: np.ndarray, task: Task, top: int = 10
) -> dict[str, pd.DataFrame]:
    """:func:`most_confused_pairs` of every head for ``(N, n_heads)`` label and prediction arrays."""
    y_true, y_pred = np.asarray(y_true).reshape(len(y_true), -1), np.asarray(y_pred).reshape(len(y_pred), -1)
    return {
        h.column: most_confused_pairs(confusion_matrix(y_true[:, j], y_pred[:, j], h.num_classes), h.class_names, top)
        for j, h in enumerate(task.heads)
    }
