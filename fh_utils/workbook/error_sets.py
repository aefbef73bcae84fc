"""Notebook 08's input: a run's or a fold sweep's out-of-sample predictions as one frame (:class:`ErrorSet`).

:func:`load_errors` reads stored probabilities in the layout of ``val_predictions.csv`` (per head ``<key>_true``,
``<key>_pred``, ``<key>_loss``, ``<key>_p_<class>``) plus each row's ``source`` (train / val CSV), ``row`` (its
index among that CSV's rows) and ``fold``:

- a run: the ``val_predictions.csv`` of the checkpoint it submits (without probabilities there: ``val_epochs.npz``
  at that checkpoint's epoch, or a weight average's own ``val_avg.npz``), so only the validation rows are covered;
- a fold sweep: the out-of-fold probabilities of ``python -m fh_utils oof SWEEP``
  (:mod:`fh_utils.workbook.oof`, made here when missing) at the epoch count every row favours: every row of train
  and val, each predicted by the fold run that never trained on it.

:mod:`fh_utils.workbook.errors` reads the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import read_rows
from fh_utils.io import read_json
from fh_utils.paths import resolve_data_root
from fh_utils.runs import (
    CHECKPOINT_PREDICTIONS_FILE,
    CONFIG_FILE,
    EPOCH_PREDICTIONS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    check_checkpoint_rule,
    config_task,
    latest_run,
    run_candidates,
    when_saved,
)  # fmt: skip
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import TASKS, Head, Task, get_task
from fh_utils.training.metrics import task_metrics

VAL_ONLY, OUT_OF_FOLD = "val only", "out-of-fold"


@dataclass
class ErrorSet:
    """Out-of-sample predictions of a run or a fold sweep, one row per predicted image.

    Attributes:
        task: The task (class names from the data's ``classes.json``).
        frame: ``image_name``, ``source``, ``row``, ``fold``, then per head ``<key>_true``, ``<key>_pred``,
            ``<key>_loss`` (``-log p(true)``, floored at 1e-7) and ``<key>_p_<class name>``.
        coverage: ``"val only"`` (a run's validation rows) or ``"out-of-fold"`` (every row of train and val).
        folder: Where figures (``figures/``) and ``label_issues.csv`` go: the run or the sweep folder.
        what: One line saying which predictions these are.
        data: The run's data configuration (for the crops), None when unknown.
        metrics: The run's ``metrics.json`` (ST2: the colour baseline's score), empty for a sweep.
    """

    task: Task
    frame: pd.DataFrame
    coverage: str
    folder: Path
    what: str
    data: DataConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    _rows: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def head(self, name: str) -> Head:
        """The head named by its column or key."""
        return self.task.head(name)

    def heads(self, name: str = "") -> list[Head]:
        """``[the head named]``, or every head for ``""``."""
        return [self.head(name)] if name else list(self.task.heads)

    def probabilities(self, name: str) -> np.ndarray:
        """``(N, C)`` probabilities of one head."""
        h = self.head(name)
        return self.frame[[f"{h.key}_p_{c}" for c in h.class_names]].to_numpy(dtype=np.float64)

    def targets(self) -> np.ndarray:
        """``(N, n_heads)`` true classes."""
        return self.frame[[f"{h.key}_true" for h in self.task.heads]].to_numpy(dtype=np.int64)

    def predictions(self) -> np.ndarray:
        """``(N, n_heads)`` predicted classes."""
        return self.frame[[f"{h.key}_pred" for h in self.task.heads]].to_numpy(dtype=np.int64)

    def split_rows(self, source: str) -> pd.DataFrame:
        """The data's rows of one CSV (``train`` / ``val``) as the run read them (its ``limit``), read once."""
        if self.data is None:
            raise FileNotFoundError(f"{self.what}: no data configuration found, so no images; set data_root")
        if source not in self._rows:
            self._rows[source] = read_rows(self.data, self.task, source)
        return self._rows[source]

    def class_counts(self, name: str) -> tuple[np.ndarray, str]:
        """Rows per class of the training data (train CSV; train ∪ val for out-of-fold), and where from."""
        h = self.head(name)
        if self.coverage == OUT_OF_FOLD:
            labels, where = self.frame[f"{h.key}_true"].to_numpy(), "train + val"
        else:
            try:
                labels, where = self.split_rows("train")[h.column].to_numpy(), "train"
            except (OSError, ValueError):  # no data here: the evaluated rows stand in
                labels, where = self.frame[f"{h.key}_true"].to_numpy(), "evaluated rows"
        labels = labels[labels >= 0].astype(np.int64)
        return np.bincount(labels, minlength=h.num_classes)[: h.num_classes], where

    def describe(self) -> str:
        """A few lines for the notebook: what is covered, how many rows, where results go."""
        lines = [f"task      {self.task.name}: {self.task.title}", f"source    {self.what}",
                 f"rows      {len(self.frame):,} ({self.coverage})", f"folder    {self.folder}"]  # fmt: skip
        if self.coverage == VAL_ONLY:
            lines.append("coverage  validation rows only: no out-of-fold predictions, so the training rows (and their "
                         "labels) are not judged here; a fold sweep (sweep=...) covers every row")  # fmt: skip
        return "\n".join(lines)


def frame_from_probabilities(task: Task, probabilities: dict[str, np.ndarray], targets: np.ndarray,
                             ids: dict[str, Any]) -> pd.DataFrame:  # fmt: skip
    """The :class:`ErrorSet` frame from ``{column: (N, C)}`` probabilities, ``(N, n_heads)`` targets and ids.

    The loss and class columns are :func:`fh_utils.workbook.evaluation.save_predictions`'s.
    """
    targets = np.asarray(targets, dtype=np.int64).reshape(len(targets), -1)
    n = len(targets)
    frame = pd.DataFrame({"image_name": np.asarray(ids["image_name"]).astype(str),
                          "source": np.asarray(ids.get("source", ["val"] * n)).astype(str),
                          "row": np.asarray(ids.get("row", np.arange(n)), dtype=np.int64),
                          "fold": np.asarray(ids.get("fold", np.full(n, -1)), dtype=np.int64)})  # fmt: skip
    for j, h in enumerate(task.heads):
        probs = np.asarray(probabilities[h.column], dtype=np.float64)
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
        truth = np.clip(targets[:, j], 0, probs.shape[1] - 1)
        frame[f"{h.key}_true"] = targets[:, j]
        frame[f"{h.key}_pred"] = probs.argmax(axis=1)
        frame[f"{h.key}_loss"] = -np.log(np.maximum(probs[np.arange(n), truth], 1e-7))
        for c, name in enumerate(h.class_names):
            frame[f"{h.key}_p_{name}"] = probs[:, c]
    return frame


def _has_probabilities(frame: pd.DataFrame, task: Task) -> bool:
    return all(f"{h.key}_p_{c}" in frame and f"{h.key}_loss" in frame for h in task.heads for c in h.class_names)


def _run_folder(run_dir: str, task: str) -> Path:
    if not str(run_dir):
        return latest_run(task or None, EPOCH_PREDICTIONS_FILE)
    candidates = run_candidates(run_dir)
    for c in candidates:
        if (c / PREDICTIONS_FILE).is_file() or (c / EPOCH_PREDICTIONS_FILE).is_file():
            return c.resolve()
    raise FileNotFoundError(f"no {PREDICTIONS_FILE} or {EPOCH_PREDICTIONS_FILE} for run {str(run_dir)!r}; looked in "
                            + ", ".join(str(c) for c in candidates))  # fmt: skip


def _data_config(config: dict, data_root: str) -> DataConfig | None:
    values = config.get("data")
    if not values:
        return None
    cfg = DataConfig.from_dict(values)
    return cfg.replace(data_root=str(resolve_data_root(data_root))) if data_root else cfg


def load_run_errors(run_dir: str | Path = "", task: str = "", data_root: str = "", checkpoint: str = "") -> ErrorSet:
    """A run's validation predictions, those of the checkpoint it submits (its rule's), as an :class:`ErrorSet`.

    Args:
        run_dir: A run folder (path or name under ``outputs/runs``); ``""``: the newest run (of ``task``) with
            stored validation probabilities.
        task: ``st1`` / ``st2``; empty: the run's.
        data_root: Where the images are (for the crops); empty: the run's data root.
        checkpoint: The rule of the checkpoint whose predictions are read (``"best"``, ``"last"``, ``"avg"``,
            ``"crt"``: the one a team submits with notebook 05's ``checkpoint``); empty: the run's own rule.

    Raises:
        FileNotFoundError: No run folder with stored validation probabilities, or none of that checkpoint.
    """
    folder = _run_folder(str(run_dir), task)
    config = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).exists() else {}
    metrics = read_json(folder / METRICS_FILE) if (folder / METRICS_FILE).exists() else {}
    data = _data_config(config, data_root)
    task_obj = get_task(task or config_task(config) or metrics.get("task") or "st2", data.root if data else None)
    stored = EpochPredictions.load(folder / EPOCH_PREDICTIONS_FILE) if (folder / EPOCH_PREDICTIONS_FILE).is_file() \
        else None  # fmt: skip
    csv = folder / PREDICTIONS_FILE
    frame = pd.read_csv(csv) if csv.is_file() else None
    trained_rule = (metrics.get("checkpoint") or {}).get("rule", "best")  # best: a run from before checkpoint rules
    rule = check_checkpoint_rule(checkpoint or trained_rule)
    own = folder / CHECKPOINT_PREDICTIONS_FILE.format(rule=rule)
    if rule == trained_rule and frame is not None and _has_probabilities(frame, task_obj):  # the rule's final eval
        what = f"run {folder.name}: {PREDICTIONS_FILE} (the val predictions of its {rule!r} checkpoint)"
        same = stored is not None and len(stored.image_name) == len(frame) \
            and (stored.image_name.astype(str) == frame["image_name"].astype(str).to_numpy()).all()  # fmt: skip
        frame.insert(1, "source", stored.source.astype(str) if same else "val")
        frame.insert(2, "row", stored.row.astype(np.int64) if same else np.arange(len(frame)))
        frame.insert(3, "fold", -1)
    elif rule not in ("best", "last"):  # a weight average or cRT: its own stored val probabilities
        if not own.is_file():
            raise FileNotFoundError(f"{folder}: no {own.name}, the val predictions of its {rule!r} checkpoint "
                                    f"({when_saved(rule)})")  # fmt: skip
        saved = EpochPredictions.load(own)
        what = f"run {folder.name}: {own.name} (its {rule!r} checkpoint; no probabilities in {PREDICTIONS_FILE})"
        ids = {"image_name": saved.image_name, "source": saved.source, "row": saved.row}
        frame = frame_from_probabilities(task_obj, saved.at_epoch(int(saved.epochs[-1])), saved.targets, ids)
    elif stored is not None and len(stored.epochs):
        # The epoch of the checkpoint the run submits: the last one under rule "last", else the best val epoch.
        best = int(metrics.get("epoch") or stored.epochs[-1]) if rule != "last" else int(stored.epochs[-1])
        epoch = best if best in set(stored.epochs.tolist()) else int(stored.epochs[-1])
        what = (f"run {folder.name}: {EPOCH_PREDICTIONS_FILE} at epoch {epoch}, its {rule!r} checkpoint's (no "
                f"probabilities in {PREDICTIONS_FILE})")  # fmt: skip
        ids = {"image_name": stored.image_name, "source": stored.source, "row": stored.row}
        frame = frame_from_probabilities(task_obj, stored.at_epoch(epoch), stored.targets, ids)
    else:
        raise FileNotFoundError(f"{folder}: no stored validation probabilities ({PREDICTIONS_FILE} with probability "
                                f"columns, or {EPOCH_PREDICTIONS_FILE}); a split='full' run has none")  # fmt: skip
    return ErrorSet(task_obj, frame, VAL_ONLY, folder, what, data, metrics)


def _task_of_columns(columns: list[str]) -> str:
    for name, t in TASKS.items():
        if set(columns) == set(t.label_columns):
            return name
    raise ValueError(f"cannot tell the task of probability columns {columns}")


def _oof_file(sweep: str, task: str) -> tuple[Path, Path, dict]:
    """(oof file, sweep folder, its oof_report.json group or {}) for a sweep name, folder or ``.npz`` file."""
    from fh_utils.workbook.oof import OOF_DIR, OOF_REPORT, sweep_oof

    candidates = run_candidates(sweep)
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise FileNotFoundError(f"sweep {sweep!r} not found; looked in " + ", ".join(str(c) for c in candidates))
    if found.is_file():
        folder = found.parent.parent if found.parent.name == OOF_DIR else found.parent
        report = folder / OOF_DIR / OOF_REPORT
        groups = read_json(report)["groups"] if report.exists() else []
        group = next((g for g in groups if g.get("file") and found.name == Path(g["file"]).name), {})
        return found, folder, group
    report = found / OOF_DIR / OOF_REPORT
    if not report.exists():  # `python -m fh_utils oof SWEEP` was not run yet: gather the folds now
        sweep_oof(found.name, found.parent)
    groups = [g for g in read_json(report)["groups"] if g.get("file") and (not task or g["task"] == task)]
    if not groups:
        raise FileNotFoundError(f"{report}: no complete fold set{f' of {task}' if task else ''} (see its problems)")
    best = max(groups, key=lambda g: ((g.get("result") or {}).get("score") or {}).get("score") or -1.0)
    return found.parent / best["file"], found, best


def load_sweep_errors(sweep: str | Path, task: str = "", data_root: str = "", epoch: int = 0) -> ErrorSet:
    """A fold sweep's out-of-fold predictions as an :class:`ErrorSet` (every row of train and val).

    Args:
        sweep: The sweep folder (a name under ``outputs/runs`` or a path), or one of its ``oof/*.npz`` files; with
            several fold sets the best-scoring one (of ``task``) is taken.
        task: ``st1`` / ``st2``; empty: the fold set's.
        data_root: Where the images are; empty: the fold runs' data root.
        epoch: The epoch whose probabilities are read; 0: the count every out-of-fold row favours
            (``oof_report.json``'s full-fit epochs), else the best out-of-fold score's.
    """
    path, folder, group = _oof_file(str(sweep), task)
    oof = EpochPredictions.load(path)
    name = group.get("task") or task or _task_of_columns(list(oof.probabilities))
    members = list((group.get("runs") or {}).values())  # run names relative to the sweep's parent folder
    config_path = folder.parent / members[0] / CONFIG_FILE if members else None
    config = read_json(config_path) if config_path is not None and config_path.exists() else {}
    data = _data_config(config, data_root)
    task_obj = get_task(name, data.root if data else None)
    if not epoch:
        epoch = int((group.get("result") or {}).get("epochs") or 0)
    if epoch not in set(oof.epochs.tolist()):
        scores = [task_metrics(task_obj, oof.targets, np.stack([oof.at_epoch(int(e))[h.column].argmax(1)
                                                                for h in task_obj.heads], 1))["score"]
                  for e in oof.epochs]  # fmt: skip
        epoch = int(oof.epochs[int(np.argmax(scores))])
    frame = frame_from_probabilities(task_obj, oof.at_epoch(epoch), oof.targets,
                                     {"image_name": oof.image_name, "source": oof.source, "row": oof.row,
                                      "fold": oof.fold})  # fmt: skip
    what = f"fold sweep {folder.name}: out-of-fold {path.name} at epoch {epoch}"
    return ErrorSet(task_obj, frame, OUT_OF_FOLD, folder, what, data, {})


def load_errors(run_dir: str = "", sweep: str = "", task: str = "", data_root: str = "",
                checkpoint: str = "") -> ErrorSet:  # fmt: skip
    """Notebook 08's one call: a fold sweep's out-of-fold predictions when ``sweep`` is set, else a run's.

    A run's are those of its ``checkpoint`` rule (empty: the rule it was trained with; :func:`load_run_errors`).
    """
    if str(sweep):
        return load_sweep_errors(sweep, task, data_root)
    return load_run_errors(run_dir, task, data_root, checkpoint)
