"""Choose an ST2 submission's members and weights from the candidates' stored val predictions, honestly scored.

:func:`choose_ensemble` reads, for every candidate run, the val probabilities of the checkpoint it submits (its
rule's: the best epoch's or the last epoch's from ``val_epochs.npz``, the weight average's from ``val_avg.npz``),
runs Caruana's greedy forward selection with replacement (:func:`fh_utils.scoring.selection.greedy_selection`;
why greedy counts rather than fitted weights: see that module) within the 25 MB budget, and estimates the chosen
ensemble on unseen photos by re-running the selection on K-1 class-stratified folds of val and scoring the held
fold (:func:`fh_utils.scoring.selection.selection_estimate`). Nothing is retrained or re-predicted.

:func:`write_ensemble_choice` writes ``ensemble_choice.json``::

    {"task": "st2", "metric": "acsa", "checkpoint": "", "created": "...",
     "runs": [{"run": "st2-seeds/t0003", "weight": 2, "val_score": 0.61}, ...],
     "val_score": 0.66, "estimate": {"score": 0.62, "low": 0.55, "high": 0.69, "rule": "ensemble choice",
     "how": "..."}, "candidates": [{"run": ..., "val_score": ..., "chosen": 2}, ...]}

which ``package`` and notebook 05 take as ``run_dir`` (the weights come with it) and whose estimate the package
records in ``submission.json`` and the ledger. Run names only, never local paths. The probabilities are those of
validation without test-time augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fh_utils.io import read_json, write_json
from fh_utils.runs import (
    CHECKPOINT_PREDICTIONS_FILE,
    CONFIG_FILE,
    EPOCH_PREDICTIONS_FILE,
    METRICS_FILE,
    check_checkpoint_rule,
    model_file,
    resolve_run_dirs,
    run_checkpoint_rule,
    run_label,
)  # fmt: skip
from fh_utils.scoring.estimates import Scorer
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.scoring.selection import EnsembleChoice, selection_estimate
from fh_utils.tasks import Task, get_task

ENSEMBLE_CHOICE_FILE = "ensemble_choice.json"
CHOICE_RULE = "ensemble choice"


class EnsembleChoiceError(ValueError):
    """The candidates cannot be compared (another task, other val rows, no stored predictions): each named."""


@dataclass
class Candidate:
    """One run offered to the ensemble: its name, val probabilities (of its rule's checkpoint) and size."""

    run: Path
    probabilities: dict[str, np.ndarray]
    size_mb: float
    rule: str


def _candidate(run: Path, rule: str) -> tuple[Candidate, EpochPredictions]:
    """The run's rule's checkpoint val probabilities; the stored epochs they come from (for the rows)."""
    rule = check_checkpoint_rule(rule or run_checkpoint_rule(run))
    metrics = read_json(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else {}
    if metrics.get("validation", "val") != "val":
        raise EnsembleChoiceError(f"{run_label(run)} validated on {metrics['validation']!r}, not on the val split: "
                                  "only runs validated on val can be compared on it")  # fmt: skip
    path = run / EPOCH_PREDICTIONS_FILE
    if not path.is_file():
        raise EnsembleChoiceError(f"{run_label(run)} stored no per-epoch val predictions ({EPOCH_PREDICTIONS_FILE}); "
                                  "it was trained before they were kept: train it again to offer it")  # fmt: skip
    record = EpochPredictions.load(path)
    if rule == "best":
        probs = record.at_epoch(int(metrics.get("epoch") or record.epochs[np.argmax(record.epochs)]))
    elif rule == "last":
        probs = record.at_epoch(int(record.epochs[-1]))
    else:
        own = run / CHECKPOINT_PREDICTIONS_FILE.format(rule=rule)
        if not own.is_file():
            raise EnsembleChoiceError(f"{run_label(run)}: no val predictions of its {rule!r} checkpoint ({own.name})")
        saved = EpochPredictions.load(own)
        probs = saved.at_epoch(int(saved.epochs[-1]))
    weights = model_file(run, rule)
    size = weights.stat().st_size / 1e6 if weights is not None else float("inf")
    return Candidate(run, probs, size, rule), record


def choose_ensemble(
    runs: str | Path | list[str | Path],
    checkpoint: str = "",
    budget_mb: float | None = None,
    folds: int = 5,
    repeats: int = 4,
    bootstrap: int = 200,
    seed: int = 0,
) -> tuple[EnsembleChoice, list[Candidate], Task]:
    """Choose members and weights among candidate runs; estimate the choice on unseen photos.

    Args:
        runs: Candidate runs as notebook 05 takes them (folders or names, comma-separated, a ``top_k.json``).
        checkpoint: The rule each candidate submits (``""``: each run's own).
        budget_mb: Size budget of the distinct members (default: the task's, 25 MB).
        folds: K of the K-fold selection estimate.
        repeats: Fold assignments of the estimate.
        bootstrap: Class-stratified bootstrap replicates of its interval.
        seed: Seed of the folds and the bootstrap.

    Raises:
        EnsembleChoiceError: ST1 (one model per submission: rank by the estimate instead), candidates of another
            task or other val rows, or without stored predictions.
    """
    names = ",".join(map(str, runs)) if isinstance(runs, (list, tuple)) else str(runs)
    folders = resolve_run_dirs(names, "", checkpoint)
    tasks = {}
    for run in folders:
        config = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).is_file() else {}
        name, root = (config.get("task") or {}).get("name", "st2"), (config.get("data") or {}).get("data_root")
        tasks[run] = get_task(name, root)
    names_of_tasks = {t.name for t in tasks.values()}
    if len(names_of_tasks) != 1:
        raise EnsembleChoiceError(f"candidates of several tasks: {sorted(names_of_tasks)}")
    task = next(iter(tasks.values()))
    if not task.rules.ensembles_allowed:
        raise EnsembleChoiceError(f"{task.name}: the rules allow one model per submission; rank the candidates "
                                  "by the honest estimate instead (notebook 06's top_k.json)")  # fmt: skip
    pairs = [_candidate(run, checkpoint) for run in folders]
    reference = pairs[0][1]
    for candidate, record in pairs[1:]:
        if not np.array_equal(record.image_name, reference.image_name):
            raise EnsembleChoiceError(f"{run_label(candidate.run)} validated on other rows than "
                                      f"{run_label(pairs[0][0].run)} (another data root, limit or split)")  # fmt: skip
    candidates = [c for c, _ in pairs]
    scorer = Scorer(task, reference.targets)
    budget = task.rules.size_budget_mb if budget_mb is None else budget_mb
    choice = selection_estimate(scorer, [c.probabilities for c in candidates], [c.size_mb for c in candidates],
                                budget, folds=folds, repeats=repeats, bootstrap=bootstrap, seed=seed)  # fmt: skip
    return choice, candidates, task


def write_ensemble_choice(folder: str | Path, choice: EnsembleChoice, candidates: list[Candidate], task: Task,
                          checkpoint: str = "") -> Path:  # fmt: skip
    """Write ``ensemble_choice.json`` (format in the module docstring) into ``folder``; returns its path."""
    chosen = [{"run": run_label(c.run), "weight": int(n), "val_score": float(s)}
              for c, n, s in zip(candidates, choice.counts, choice.singles) if n > 0]  # fmt: skip
    record: dict[str, Any] = {
        "task": task.name, "metric": task.metric, "checkpoint": checkpoint,
        "created": datetime.now().isoformat(timespec="seconds"), "runs": chosen,
        "val_score": float(choice.val_score),
        "estimate": {**choice.estimate, "rule": CHOICE_RULE, "how": choice.how},
        "candidates": [{"run": run_label(c.run), "rule": c.rule, "val_score": float(s), "chosen": int(n),
                        "size_mb": round(c.size_mb, 4)}
                       for c, n, s in zip(candidates, choice.counts, choice.singles)],
    }  # fmt: skip
    path = Path(folder) / ENSEMBLE_CHOICE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return path


def describe_choice(choice: EnsembleChoice, candidates: list[Candidate]) -> str:
    """A few lines for a notebook or the command line: members, weights, the val score and the estimate."""
    est = choice.estimate
    lines = [f"{run_label(c.run)}: weight {int(n)} (alone {s:.4f})"
             for c, n, s in zip(candidates, choice.counts, choice.singles) if n > 0]  # fmt: skip
    lines += [f"val score of the choice {choice.val_score:.4f}: optimistic, chosen on these rows",
              f"ESTIMATE on unseen photos {est['score']:.4f} [{est['low']:.4f}, {est['high']:.4f}]: trust this one "
              f"({choice.how})"]  # fmt: skip
    return "\n".join(lines)
