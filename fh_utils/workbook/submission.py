"""Notebook 05: predict any CSV in the FASHION-HOW layout offline on the CPU, as the scoring server does.

Writes ``submission.csv`` (the official format) and ``submission_metrics.json`` (timing, size against the
budget, the TTA mode and, when the CSV has labels, the score of the prediction and of every member) into the
output folder, atomically.

What is scored (``run_dir``): one run folder (``best.pt``); a saved ensemble (``ensemble.pt``) or int8 export
(``model_int8.pt``) folder; several run folders, comma-separated; or a JSON file listing run folders (a list,
or ``{"runs": [...]}``, e.g. the ``top_k.json`` of notebook 06). Several runs make an ST2 ensemble
(:mod:`fh_utils.models.ensemble`): its probabilities are the (weighted) mean of the members', its size the sum
of theirs, and it is saved as one ``ensemble.pt`` in its own run folder, which receives the submission. ST1
refuses an ensemble (competition rule) unless ``enforce_rules=False``.

Crops are made exactly as validation made them (:func:`fh_utils.data.datasets.build_source`), so a run
scores here what its ``metrics.json`` recorded (with the same ``tta``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fh_utils.data import reader as _data
from fh_utils.inference.loading import load_for_prediction
from fh_utils.inference.predictor import Predictor, label_arrays
from fh_utils.inference.predictor import _predictions as _predictions
from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.models.ensemble import Member, check_budget, save_ensemble
from fh_utils.models.factory import state_dict_size_mb
from fh_utils.paths import resolve_data_root
from fh_utils.runs import CONFIG_FILE, SUBMISSION_FILE, SUBMISSION_METRICS_FILE, create_run_dir
from fh_utils.tasks import Task, get_task
from fh_utils.training.metrics import task_metrics
from fh_utils.training.tta import check_tta


@dataclass
class SubmissionSetup:
    """Resolved inputs of notebook 05.

    Attributes:
        run_dir: Output folder: the run (or saved ensemble / int8 export) scored, or the new ensemble's folder.
        task: The task.
        csv: CSV to predict.
        images_dir: Folder its image names are relative to.
        threads: CPU threads for torch.
        run_config: ``config.json`` of ``run_dir`` (empty for an ensemble of runs).
        model_path: File the scoring loads (``best.pt``, ``ensemble.pt`` or ``model_int8.pt``).
        tta: Test-time augmentation mode (:data:`fh_utils.training.tta.TTA_MODES`).
        members: Source run folders of an ensemble (empty for one model).
    """

    run_dir: Path
    task: Task
    csv: Path
    images_dir: Path
    threads: int
    run_config: dict
    model_path: Path = Path()
    tta: str = "none"
    members: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"run dir    {self.run_dir}", f"task       {self.task.name}: {self.task.title}",
                 f"model      {self.model_path.name}" + (f" ({len(self.members)} members)" if self.members else ""),
                 f"csv        {self.csv}", f"images     {self.images_dir}",
                 f"device     cpu, {self.threads} torch threads", f"tta        {self.tta}"]  # fmt: skip
        lines += [f"member     {m}" for m in self.members]
        return "\n".join(lines)


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
    tta: str = "none",
    weights: str | list[float] = "",
    ensemble_name: str = "",
    enforce_rules: bool = True,
    checkpoint: str = "",
) -> SubmissionSetup:
    """Resolve notebook 05's parameters: the model(s), their task, the CSV and its images, threads, TTA.

    ``test_csv = ""`` takes the val CSV of the task under ``data_root`` (``""``: the default data root).
    Several runs (comma-separated, or a JSON list) are built into an ensemble, checked against the rules and
    the size budget, and saved as ``ensemble.pt`` in a new run folder (``ensemble_name``, default
    ``<timestamp>-<task>-ensemble<n>``) with ``manifest.json``; that folder receives the submission.
    ``checkpoint``: the rule whose checkpoint each run predicts with (``"best"``, ``"last"``, ``"avg"``, ``"crt"``;
    ``""``: the rule the run was trained with). Loading and every check:
    :func:`fh_utils.inference.loading.load_for_prediction`.

    Raises:
        fh_utils.models.factory.RulesError: An ST1 ensemble, or model(s) over the size budget (unless
            ``enforce_rules=False``).
    """
    tta = check_tta(tta)
    loaded = load_for_prediction(run_dir, task, weights, checkpoint, enforce_rules, size_budget=enforce_rules)
    name, members = loaded.task.name, []
    if loaded.kind == "runs":
        out = create_run_dir(ensemble_name or None, task=name, backbone=f"ensemble{len(loaded.sources)}")
        model_path = save_ensemble(loaded.members, out)
        run, config, members = out, read_json(out / CONFIG_FILE), loaded.sources
    else:
        run, model_path = loaded.sources[0], loaded.model_path
        config = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).exists() else {}
    if test_csv:
        csv = Path(test_csv).expanduser().resolve()
    else:
        root = resolve_data_root(data_root)
        csv = _data.csv_path(root, get_task(name, root), "val")
    images = Path(images_dir).expanduser().resolve() if images_dir else _default_images_dir(csv)
    n_threads = threads or os.cpu_count() or 1
    return SubmissionSetup(run, get_task(name, csv.parent), csv, images, n_threads, config, model_path, tta, members)


@dataclass
class SubmissionResult:
    """Predictions of notebook 05 with their timing.

    Attributes:
        submission: The official DataFrame (``image_name`` and one column per head).
        rows: The validated CSV rows (labels when it has them).
        members: The models that predicted (one, or an ensemble's).
        task: The task.
        seconds: Wall time of loading, reading and predicting.
        probabilities: ``{column: (N, C)}`` of the prediction (the members' weighted mean).
        member_probabilities: The same per member.
        tta: Test-time augmentation mode.
    """

    submission: pd.DataFrame
    rows: pd.DataFrame
    members: list[Member]
    task: Task
    seconds: float
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    member_probabilities: list[dict[str, np.ndarray]] = field(default_factory=list)
    tta: str = "none"

    @property
    def model(self) -> torch.nn.Module:
        """The first (for one model: the) member's network."""
        return self.members[0].model

    def labels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(y_true, y_pred)`` arrays ``(N, n_heads)`` when the CSV has labels, else None."""
        if not self.rows.attrs.get("has_labels"):
            return None
        return label_arrays(self.task, self.rows, self.submission)

    @property
    def images_per_s(self) -> float:
        """Throughput of the whole prediction (model loading and CSV reading included)."""
        return len(self.submission) / self.seconds if self.seconds > 0 else float("nan")


def predict_submission(setup: SubmissionSetup, batch_size: int = 64, progress: bool = True) -> SubmissionResult:
    """Load the model(s), read the CSV and predict every row on the CPU, timed as the scoring server would.

    The prediction is :class:`fh_utils.inference.predictor.Predictor`'s, the object the packaged leaderboard
    submission runs.
    """
    torch.set_num_threads(setup.threads)
    start = time.perf_counter()
    predictor = Predictor.load(setup.model_path, setup.tta, batch_size=batch_size)
    pred = predictor.predict_csv(setup.csv, setup.images_dir, progress=progress)
    seconds = time.perf_counter() - start
    return SubmissionResult(pred.frame, pred.rows, predictor.members, predictor.task, seconds, pred.probabilities,
                            pred.member_probabilities, setup.tta)  # fmt: skip


def size_report(result: SubmissionResult | torch.nn.Module, task: Task | None = None) -> dict[str, Any]:
    """Saved size against the task's budget: the sum over an ensemble's members (or one model's state dict)."""
    if isinstance(result, SubmissionResult):
        members, task = result.members, result.task
    else:
        members = [Member(result, size_mb=state_dict_size_mb(result))]
    size = check_budget(members, task, size_budget=False)
    budget = task.rules.size_budget_mb
    return {
        "size_mb": round(size, 3),
        "budget_mb": budget,
        "within_budget": size <= budget,
        "parameters": sum(p.numel() for m in members for p in m.model.parameters()),
        "members": len(members),
    }


def member_scores(result: SubmissionResult) -> pd.DataFrame | None:
    """Score of every member and of their average on the CSV (None without labels); one row each."""
    if not result.rows.attrs.get("has_labels"):
        return None
    y_true = result.rows[result.task.label_columns].to_numpy()
    rows = []
    for m, probs in zip(result.members, result.member_probabilities):
        score = task_metrics(result.task, y_true, _predictions(result.task, probs))["score"]
        rows.append({"member": Path(m.name).name or m.name, "weight": m.weight, "size_mb": round(m.size_mb, 3),
                     "validated_score": m.score, "score": score})  # fmt: skip
    if len(result.members) > 1:
        score = task_metrics(result.task, y_true, _predictions(result.task, result.probabilities))["score"]
        rows.append({"member": "ensemble", "weight": sum(m.weight for m in result.members),
                     "size_mb": round(sum(m.size_mb for m in result.members), 3), "validated_score": None,
                     "score": score})  # fmt: skip
    return pd.DataFrame(rows)


def finish_submission(setup: SubmissionSetup, result: SubmissionResult) -> dict[str, Any]:
    """Write ``submission.csv`` and ``submission_metrics.json`` into the output folder; return the metrics.

    The score (``task_metrics``) is computed when the CSV has labels; ``"score"`` is None otherwise. The TTA
    mode and every member (its run, weight, size and, with labels, its own score) are recorded.
    """
    sub_path = setup.run_dir / SUBMISSION_FILE
    atomic_write(sub_path, lambda tmp: result.submission.to_csv(tmp, index=False))
    scores = member_scores(result)
    members = [{"run": m.name, "weight": m.weight, "size_mb": round(m.size_mb, 4), "validated_score": m.score}
               for m in result.members]  # fmt: skip
    if scores is not None:
        for entry, score in zip(members, scores["score"]):
            entry["score"] = float(score)
    out: dict[str, Any] = {
        "task": result.task.name,
        "metric": result.task.metric,
        "score": None,
        "csv": str(setup.csv),
        "images_dir": str(setup.images_dir),
        "submission": str(sub_path),
        "model_file": str(setup.model_path),
        "tta": result.tta,
        "rows": len(result.submission),
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "threads": setup.threads,
        **size_report(result),
        "member_list": members,
    }
    labels = result.labels()
    if labels is not None:
        out.update(task_metrics(result.task, *labels))
    write_json(setup.run_dir / SUBMISSION_METRICS_FILE, out)
    return out
