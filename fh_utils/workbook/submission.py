"""Notebook 05: predict any CSV in the FASHION-HOW layout offline on the CPU, as the scoring server does.

Writes ``submission.csv`` (the official format) and ``submission_metrics.json`` (timing, size against the
budget and, when the CSV has labels, the score) into the run folder, atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from fh_utils.data import reader as _data
from fh_utils.data.datasets import create_dataset
from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.models.factory import load_model, state_dict_size_mb, task_of_model
from fh_utils.paths import runs_dir
from fh_utils.runs import BEST_CKPT, CONFIG_FILE, config_task, latest_run
from fh_utils.tasks import Task, get_task
from fh_utils.training.engine import predict
from fh_utils.training.metrics import task_metrics
from fh_utils.workbook.workflow import resolve_data_root

SUBMISSION_FILE, SUBMISSION_METRICS_FILE = "submission.csv", "submission_metrics.json"


@dataclass
class SubmissionSetup:
    """Resolved inputs of notebook 05."""

    run_dir: Path
    task: Task
    csv: Path
    images_dir: Path
    threads: int
    run_config: dict

    def __str__(self) -> str:
        return (
            f"run dir    {self.run_dir}\ntask       {self.task.name}: {self.task.title}\n"
            f"csv        {self.csv}\nimages     {self.images_dir}\n"
            f"device     cpu, {self.threads} torch threads"
        )


def resolve_run_dir(run_dir: str | Path = "", task: str = "") -> Path:
    """A run folder with ``best.pt``: a path, a run name under ``outputs/runs``, or ``""`` (the newest)."""
    if not str(run_dir):
        return latest_run(task or None, BEST_CKPT)
    path = Path(run_dir).expanduser()
    for candidate in (path, runs_dir() / str(run_dir)):
        if (candidate / BEST_CKPT).is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no {BEST_CKPT} in {path} nor in {runs_dir() / str(run_dir)}")


def _default_images_dir(csv: Path) -> Path:
    """``<csv folder>/<split>`` for a ``*_train/_val/_test.csv``, else ``<csv folder>/test``."""
    split = next((s for s in _data.SPLITS if csv.stem.endswith(f"_{s}")), "test")
    return csv.parent / split


def prepare_submission(
    run_dir: str = "",
    task: str = "",
    data_root: str = "",
    test_csv: str = "",
    images_dir: str = "",
    threads: int = 0,
) -> SubmissionSetup:
    """Resolve notebook 05's parameters: the run, its task, the CSV to predict and its images, CPU threads.

    ``test_csv = ""`` takes the val CSV of the task under ``data_root`` (``""``: the default data root).
    """
    run = resolve_run_dir(run_dir, task)
    config = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).exists() else {}
    name = (
        task
        or config_task(config)
        or torch.load(run / BEST_CKPT, map_location="cpu", weights_only=True)["model_config"]["task"]
    )
    if task and config_task(config) not in (None, task):
        raise ValueError(f"task={task!r} but {run.name} was trained for {config_task(config)!r}")
    if test_csv:
        csv = Path(test_csv).expanduser().resolve()
    else:
        root = resolve_data_root(data_root)
        csv = _data.csv_path(root, get_task(name, root), "val")
    images = Path(images_dir).expanduser().resolve() if images_dir else _default_images_dir(csv)
    n_threads = threads or os.cpu_count() or 1
    return SubmissionSetup(run, get_task(name, csv.parent), csv, images, n_threads, config)


@dataclass
class SubmissionResult:
    """Predictions of notebook 05 with their timing."""

    submission: pd.DataFrame
    rows: pd.DataFrame
    model: torch.nn.Module
    task: Task
    seconds: float

    def labels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(y_true, y_pred)`` arrays ``(N, n_heads)`` when the CSV has labels, else None."""
        if not self.rows.attrs.get("has_labels"):
            return None
        y_true = self.rows[self.task.label_columns].to_numpy()
        return y_true, self.submission[[h.key for h in self.task.heads]].to_numpy()

    @property
    def images_per_s(self) -> float:
        """Throughput of the whole prediction (model loading and CSV reading included)."""
        return len(self.submission) / self.seconds if self.seconds > 0 else float("nan")


def predict_submission(setup: SubmissionSetup, batch_size: int = 64, progress: bool = True) -> SubmissionResult:
    """Load the model, read the CSV and predict every row on the CPU, timed as the scoring server would."""
    torch.set_num_threads(setup.threads)
    start = time.perf_counter()
    model = load_model(setup.run_dir, map_location="cpu")
    task = task_of_model(model)
    rows = _data.read_csv(setup.csv, task, setup.images_dir, labels_optional=True)
    dc = model.input_config
    data = setup.run_config.get("data", {})
    dataset = create_dataset(
        setup.csv.parent,
        task,
        "test",
        train=False,
        df=rows,
        img_size=dc["img_size"],
        augment="none",
        crop_prob=float(data.get("crop_prob", 1.0) > 0),
        crop_margin=data.get("crop_margin", 0.0),
        color_spaces=tuple(dc["color_spaces"]),
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    submission = predict(model, loader, task, device="cpu", progress=progress)
    return SubmissionResult(submission, rows, model, task, time.perf_counter() - start)


def size_report(model: torch.nn.Module, task: Task) -> dict[str, Any]:
    """Saved state-dict size against the task's budget."""
    size = state_dict_size_mb(model)
    budget = task.rules.size_budget_mb
    return {
        "size_mb": round(size, 3),
        "budget_mb": budget,
        "within_budget": size <= budget,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def finish_submission(setup: SubmissionSetup, result: SubmissionResult) -> dict[str, Any]:
    """Write ``submission.csv`` and ``submission_metrics.json`` into the run folder; return the metrics.

    The score (``task_metrics``) is computed when the CSV has labels; ``"score"`` is None otherwise.
    """
    sub_path = setup.run_dir / SUBMISSION_FILE
    atomic_write(sub_path, lambda tmp: result.submission.to_csv(tmp, index=False))
    out: dict[str, Any] = {
        "task": result.task.name,
        "metric": result.task.metric,
        "score": None,
        "csv": str(setup.csv),
        "images_dir": str(setup.images_dir),
        "submission": str(sub_path),
        "rows": len(result.submission),
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "threads": setup.threads,
        **size_report(result.model, result.task),
    }
    labels = result.labels()
    if labels is not None:
        out.update(task_metrics(result.task, *labels))
    write_json(setup.run_dir / SUBMISSION_METRICS_FILE, out)
    return out
