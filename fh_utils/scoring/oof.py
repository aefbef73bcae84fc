"""Out-of-fold predictions: a fold set's held-out probabilities gathered, and its cross-validated score.

A fold set is the N runs of one recipe and seed with ``split="fold:K/N"``, K = 0..N-1: together their val rows
are every row of train ∪ val exactly once. :func:`gather_folds` puts their stored per-epoch probabilities
(:class:`~fh_utils.scoring.predictions.EpochPredictions`) into one, refusing a row missing or held out twice.
:func:`cross_validated` then scores it at one epoch count shared by every fold, chosen so that the choice is
never scored on the rows it was chosen on: each fold's rows are scored at the epoch count the *other* folds'
rows favour (nested selection); the count for a full fit is the one all rows favour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fh_utils.scoring.estimates import (
    EstimateSettings,
    Scored,
    Scorer,
    _chunks,
    _interval,
    selected_on_other_folds,
    stratified_bootstrap,
)  # fmt: skip
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import Task


class FoldSetError(ValueError):
    """The runs given do not make one complete fold set: what is missing or repeated, named."""


def gather_folds(folds: dict[int, EpochPredictions], n_folds: int, names: dict[int, str] | None = None
                 ) -> EpochPredictions:  # fmt: skip
    """One record of every row's out-of-fold probabilities, ordered by source (train, val) and row.

    Args:
        folds: ``{k: the stored predictions of the run that held fold k out}``.
        n_folds: N of ``fold:K/N``.
        names: ``{k: run name}`` for the error messages.

    Raises:
        FoldSetError: A fold without a run, a row held out by two folds, or folds of different rows
            (their union must hold each row once; a missing row shows as a gap in a CSV's row indices).
    """
    names = names or {k: f"fold {k}" for k in folds}
    missing = sorted(set(range(n_folds)) - set(folds))
    if missing:
        raise FoldSetError(f"no run for fold(s) {missing} of {n_folds}")
    n_epochs = min(len(p.epochs) for p in folds.values())
    parts = [(k, folds[k].first(int(folds[k].epochs[n_epochs - 1]))) for k in sorted(folds)]
    keys = np.concatenate([np.char.add(np.char.add(p.source.astype(str), ":"), p.row.astype(str)) for _, p in parts])
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1][:5].tolist()
        owners = {
            key: [names[k] for k, p in parts if key in set(np.char.add(np.char.add(p.source, ":"), p.row.astype(str)))]
            for key in twice
        }
        raise FoldSetError(f"{int((counts > 1).sum())} row(s) held out by more than one fold, e.g. {owners}")
    for src in np.unique([s for _, p in parts for s in p.source]):
        rows = np.sort(np.concatenate([p.row[p.source == src] for _, p in parts]))
        gaps = np.setdiff1d(np.arange(rows.max() + 1), rows)
        if len(gaps):
            raise FoldSetError(f"{len(gaps)} {src} row(s) held out by no fold, e.g. rows {gaps[:5].tolist()}")
    source = np.concatenate([p.source for _, p in parts])
    row = np.concatenate([p.row for _, p in parts])
    order = np.lexsort((row, source != "train"))  # train rows first, then val, each in CSV order
    fold = np.concatenate([np.full(p.n_rows, k) for k, p in parts])
    columns = parts[0][1].probabilities
    probs = {c: np.concatenate([p.probabilities[c] for _, p in parts], axis=1)[:, order] for c in columns}
    return EpochPredictions(parts[0][1].epochs[:n_epochs], probs, np.concatenate([p.targets for _, p in parts])[order],
                            np.concatenate([p.image_name for _, p in parts])[order], source[order], row[order],
                            fold[order])  # fmt: skip


def _val_rows_score(task: Task, oof: EpochPredictions, scorer: Scorer, correct: list[np.ndarray], boot: np.ndarray,
                    at: list[np.ndarray], s: EstimateSettings) -> dict[str, Any] | None:  # fmt: skip
    """The nested score of the val CSV's rows alone, with its interval and row count.

    Each fold's epoch is chosen on the other folds' val rows. None when the fold set has no val rows or only those.
    """
    val = oof.source == "val"
    if not val.any() or val.all():
        return None
    weights = val.astype(np.float64)[None]
    point = float(selected_on_other_folds(scorer, correct, weights, oof.fold[None])[0])
    samples = np.concatenate([selected_on_other_folds(scorer, correct, boot[c] * weights, oof.fold[None])
                              for c in _chunks(len(boot))])  # fmt: skip
    floor = Scorer(task, oof.targets[val]).binomial_variance([k[val] for k in at])
    low, high = _interval(point, float(np.var(samples)), floor, floor, s.level)
    return {**Scored(point, low, high).to_dict(), "rows": int(val.sum())}


def cross_validated(task: Task, oof: EpochPredictions, settings: EstimateSettings | None = None,
                    new_rows: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The fold set's cross-validated score at one shared epoch count, with its interval.

    Returns:
        ``{"epochs": the count all rows favour (what a full fit trains), "per_fold_epochs": {k: the count the
        other folds favour}, "score": the nested cross-validated score and its interval, "val_rows": the same
        score of the val CSV's rows alone (None without them), which a leaderboard test that resembles val
        follows more closely when train rows are harder than val's, "at_chosen": the score at
        ``epochs`` (optimistic: chosen on these rows), "per_epoch": every epoch's out-of-fold score, "rows",
        "how"}``.

    Args:
        task: The task.
        oof: From :func:`gather_folds`.
        settings: Bootstrap replicates, level and seed (folds and repeats come from the fold set).
        new_rows: Boolean mask of the rows whose class counts the interval's "new set" has (default: the val
            CSV's rows, the split a leaderboard test set resembles; all rows when there are none).
    """
    s = settings or EstimateSettings()
    scorer = Scorer(task, oof.targets)
    correct = scorer.correct(oof.probabilities)
    ones = np.ones((1, oof.n_rows))
    per_epoch = scorer.epoch_scores(correct, ones)[0]
    chosen = int(np.argmax(per_epoch))
    per_fold = {}
    for k in np.unique(oof.fold):
        others = scorer.epoch_scores(correct, (oof.fold != k).astype(float)[None])[0]
        per_fold[int(k)] = int(oof.epochs[int(np.argmax(others))])
    point = float(selected_on_other_folds(scorer, correct, ones, oof.fold[None])[0])
    boot = stratified_bootstrap(scorer.targets[:, 0], s.bootstrap, s.seed)
    samples = np.concatenate([selected_on_other_folds(scorer, correct, boot[c], oof.fold[None])
                              for c in _chunks(len(boot))])  # fmt: skip
    mask = (oof.source == "val") if new_rows is None else np.asarray(new_rows, dtype=bool)
    if not mask.any():
        mask = np.ones(oof.n_rows, dtype=bool)
    at = [k[chosen] for k in correct]
    floor = scorer.binomial_variance(at)
    new = Scorer(task, oof.targets[mask]).binomial_variance([k[mask] for k in at])
    low, high = _interval(point, float(np.var(samples)), floor, new, s.level)
    val_rows = _val_rows_score(task, oof, scorer, correct, boot, at, s)
    return {
        "epochs": int(oof.epochs[chosen]), "per_fold_epochs": per_fold, "score": Scored(point, low, high).to_dict(),
        "val_rows": val_rows,
        "at_chosen": float(per_epoch[chosen]), "per_epoch": {int(e): float(v) for e, v in zip(oof.epochs, per_epoch)},
        "rows": int(oof.n_rows), "folds": int(len(per_fold)),
        "how": (f"each fold's held-out rows scored at the epoch count the other {len(per_fold) - 1} folds' rows "
                "score best at (nested); the full-fit count is the one all out-of-fold rows score best at"),
    }  # fmt: skip
