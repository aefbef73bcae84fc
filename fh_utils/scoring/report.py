"""A run's honest numbers, from its stored per-epoch predictions, written beside its best-epoch score.

:func:`run_estimates` reads ``val_epochs.npz`` (:mod:`fh_utils.scoring.predictions`) and returns what
:func:`fh_utils.scoring.estimates.epoch_estimates` computes: the best epoch, the last epoch, the mean of the last
three and the estimate of the saved checkpoint on unseen photos, each with its 90 % interval.
:func:`write_run_estimates` adds them to ``metrics.json`` under ``"estimates"``, so every place that reads a run's
score (the training notebooks, notebook 06, ``top_k.json``, the package) finds them. A run whose validation rows
include rows it trained on (a ``full`` fit validates on nothing; a ``fold`` run on its own held-out fold only) is
marked by ``"validation"`` in ``metrics.json``; these numbers never change that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fh_utils.io import read_json, write_json
from fh_utils.runs import (
    CHECKPOINT_PREDICTIONS_FILE,
    EPOCH_PREDICTIONS_FILE,
    METRICS_FILE,
    check_checkpoint_rule,
    run_checkpoint_rule,
)  # fmt: skip
from fh_utils.scoring.estimates import EstimateSettings, epoch_estimates
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import Task

ESTIMATES_KEY = "estimates"


def run_estimates(run_dir: str | Path, task: Task, rule: str = "",
                  settings: EstimateSettings | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The run's best-epoch, last-epoch, last-three and honest numbers, or None without stored predictions.

    Args:
        run_dir: The run folder.
        task: The run's task.
        rule: How the checkpoint estimated was chosen (:data:`fh_utils.runs.CHECKPOINT_RULES`; ``""``: the rule the
            run was trained with). A weight average is estimated from its own stored val probabilities
            (``val_avg.npz``), a re-trained classifier from ``val_crt.npz``; without them the estimate is None.
        settings: How the estimates are made (defaults: 5 folds, 10 repeats, 200 bootstrap replicates, 90 %).

    Returns:
        :func:`~fh_utils.scoring.estimates.epoch_estimates`'s dict, or None when the run stored no epoch.
    """
    path = Path(run_dir) / EPOCH_PREDICTIONS_FILE
    if not path.exists():
        return None
    record = EpochPredictions.load(path)
    if len(record.epochs) == 0:
        return None
    rule = check_checkpoint_rule(rule or run_checkpoint_rule(run_dir))
    checkpoint = None
    if rule not in ("best", "last"):
        own = Path(run_dir) / CHECKPOINT_PREDICTIONS_FILE.format(rule=rule)
        if not own.exists():
            return None
        saved = EpochPredictions.load(own)
        checkpoint = saved.at_epoch(int(saved.epochs[-1]))
    return epoch_estimates(task, record.targets, record.probabilities, rule=rule,
                           checkpoint_probabilities=checkpoint, settings=settings)  # fmt: skip


def write_run_estimates(run_dir: str | Path, task: Task, rule: str = "",
                        settings: EstimateSettings | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Compute :func:`run_estimates` and store it in the run's ``metrics.json`` (nothing else there changes).

    Returns:
        The estimates, or None (and ``metrics.json`` untouched) when there is nothing to estimate from.
    """
    run_dir = Path(run_dir)
    estimates = run_estimates(run_dir, task, rule, settings)
    metrics_path = run_dir / METRICS_FILE
    if estimates is None or not metrics_path.exists():
        return estimates
    write_json(metrics_path, {**read_json(metrics_path), ESTIMATES_KEY: estimates})
    return estimates


def estimate_summary(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Flat columns for a table: ``estimate``, ``estimate_low``, ``estimate_high``, ``last_epoch``, ``last3``.

    Every value is None for a run written before estimates existed (or one without validation).
    """
    est = metrics.get(ESTIMATES_KEY) or {}

    def get(part: str, key: str = "score") -> float | None:
        value = (est.get(part) or {}).get(key)
        return None if value is None else float(value)

    return {"estimate": get("estimate"), "estimate_low": get("estimate", "low"),
            "estimate_high": get("estimate", "high"), "last_epoch_score": get("last_epoch"),
            "last3_score": get("last3")}  # fmt: skip


def describe(estimates: dict[str, Any]) -> str:
    """A few lines for a notebook's report: which number to trust, and why."""

    def fmt(part: dict) -> str:
        return f"{part['score']:.4f} [{part['low']:.4f}, {part['high']:.4f}]"

    est, level = estimates["estimate"], estimates["settings"]["level"]
    return "\n".join(
        [
            f"best epoch ({estimates['best_epoch']['epoch']}) {fmt(estimates['best_epoch'])}: optimistic, the epoch "
            "was chosen on the rows it is scored on",
            f"last epoch          {fmt(estimates['last_epoch'])}",
            f"mean of last three  {fmt(estimates['last3'])}",
            f"ESTIMATE on unseen photos ({est['rule']} checkpoint) {fmt(est)}: trust this one ({est['how']}); "
            f"intervals {level:.0%} for a new set of photos with val's class counts",
        ]
    )
