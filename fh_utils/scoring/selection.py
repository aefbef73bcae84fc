"""Choosing an ST2 ensemble from the candidates' stored val probabilities, and an honest estimate of the choice.

Greedy forward selection with replacement (Caruana et al., "Ensemble selection from libraries of models", ICML
2004): start from the best single candidate, then repeatedly add the candidate (again, if it helps most) whose
addition gives the best score of the averaged probabilities; keep the best prefix. A member added twice weighs
twice. It was chosen over fitting continuous weights because val is small (a few hundred photos, a handful in the
rarest colours): fitted weights follow the noise of those photos, while integer counts from a greedy search move
only when a whole candidate helps, and the search stops by itself.

The choice is made on val, so its val score flatters it like a best epoch does. :func:`selection_estimate` scores
it honestly: the selection is re-run on K-1 class-stratified folds and the chosen ensemble scores the held fold,
repeated over fold assignments (as :func:`fh_utils.scoring.estimates.selected_on_other_folds` does for epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fh_utils.scoring.estimates import (
    LEVEL,
    Scored,
    Scorer,
    _interval,
    fold_assignments,
    stratified_bootstrap,
)  # fmt: skip

MAX_ROUNDS = 25


def _correct(scorer: Scorer, total: list[np.ndarray]) -> list[np.ndarray]:
    return [t.argmax(-1) == scorer.targets[:, j] for j, t in enumerate(total)]


def greedy_selection(
    scorer: Scorer,
    candidates: list[dict[str, np.ndarray]],
    weights: np.ndarray | None = None,
    sizes_mb: list[float] | None = None,
    budget_mb: float = float("inf"),
    max_rounds: int = MAX_ROUNDS,
) -> np.ndarray:
    """How many times each candidate enters the ensemble (Caruana's greedy selection with replacement).

    Args:
        scorer: Scores the val rows (:class:`fh_utils.scoring.estimates.Scorer`).
        candidates: Each candidate's ``{column: (N, C)}`` val probabilities, rows in the scorer's order.
        weights: ``(N,)`` row weights of the rows the choice may look at (a fold mask, bootstrap counts);
            default all rows.
        sizes_mb: Each candidate's size; the distinct members chosen must fit ``budget_mb`` together.
        budget_mb: The size budget (a member chosen twice counts once: it is saved once, with its weight).
        max_rounds: Additions tried; the best prefix is kept (the first on a tie: fewer members).

    Returns:
        ``(M,)`` integer counts; their ratios are the members' weights.
    """
    n = scorer.n_rows
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)[None, :]
    sizes = np.zeros(len(candidates)) if sizes_mb is None else np.asarray(sizes_mb, dtype=np.float64)
    columns = [h.column for h in scorer.task.heads]
    stacked = [np.stack([c[col] for c in candidates]).astype(np.float64) for col in columns]  # (M, N, C) per head
    counts = np.zeros(len(candidates), dtype=np.int64)
    total = [np.zeros(s.shape[1:]) for s in stacked]
    best_counts, best_score = counts.copy(), -np.inf
    for _ in range(max_rounds):
        used = sizes[counts > 0].sum()
        fits = (counts > 0) | (used + sizes <= budget_mb + 1e-9)
        if not fits.any():
            break
        trial_scores = np.full(len(candidates), -np.inf)
        for m in np.flatnonzero(fits):
            trial = [t + s[m] for t, s in zip(total, stacked)]
            trial_scores[m] = scorer.row_scores([k[None] for k in _correct(scorer, trial)], w)[0]
        pick = int(np.argmax(trial_scores))
        counts[pick] += 1
        total = [t + s[pick] for t, s in zip(total, stacked)]
        if trial_scores[pick] > best_score:
            best_score, best_counts = trial_scores[pick], counts.copy()
    return best_counts


def ensemble_probabilities(candidates: list[dict[str, np.ndarray]], counts: np.ndarray) -> dict[str, np.ndarray]:
    """The count-weighted mean of the candidates' probabilities."""
    counts = np.asarray(counts, dtype=np.float64)
    return {col: sum(c * p[col] for c, p in zip(counts, candidates) if c) / counts.sum() for col in candidates[0]}


@dataclass
class EnsembleChoice:
    """A chosen ensemble and how far to trust its score.

    Attributes:
        counts: Times each candidate was chosen (0: left out).
        val_score: The chosen ensemble's score on all of val (optimistic: chosen there).
        estimate: The K-fold selection estimate with its interval.
        singles: Each candidate's own val score.
        how: How the estimate was made.
    """

    counts: np.ndarray
    val_score: float
    estimate: dict[str, Any]
    singles: list[float] = field(default_factory=list)
    how: str = ""


def selection_estimate(
    scorer: Scorer,
    candidates: list[dict[str, np.ndarray]],
    sizes_mb: list[float] | None = None,
    budget_mb: float = float("inf"),
    folds: int = 5,
    repeats: int = 4,
    bootstrap: int = 200,
    level: float = LEVEL,
    seed: int = 0,
    max_rounds: int = MAX_ROUNDS,
) -> EnsembleChoice:
    """Choose on all of val (:func:`greedy_selection`) and estimate the choice's score on unseen photos.

    The estimate re-runs the selection on K-1 class-stratified folds and scores the held fold with what it chose,
    for ``repeats`` fold assignments. Its interval is the class-stratified bootstrap of those held-fold
    predictions (the selection is not re-run per replicate: that would take minutes), floored at the binomial
    variance and widened by a new set's spread, as :mod:`fh_utils.scoring.estimates` does.
    """
    counts = greedy_selection(scorer, candidates, None, sizes_mb, budget_mb, max_rounds)
    full = scorer.score(_correct(scorer, [p for p in ensemble_probabilities(candidates, counts).values()]))
    strata = scorer.targets[:, 0]
    assignments = fold_assignments(strata, folds, repeats, seed)
    assembled = []
    for assignment in assignments:
        rows = [np.zeros(scorer.n_rows, dtype=bool) for _ in scorer.task.heads]
        for fold in np.unique(assignment):
            held = assignment == fold
            chosen = greedy_selection(scorer, candidates, (~held).astype(float), sizes_mb, budget_mb, max_rounds)
            right = _correct(scorer, list(ensemble_probabilities(candidates, chosen).values()))
            for h, r in enumerate(right):
                rows[h][held] = r[held]
        assembled.append(rows)
    point = float(np.mean([scorer.score(rows) for rows in assembled]))
    boot = stratified_bootstrap(strata, bootstrap, seed)
    samples = np.mean([scorer.row_scores([np.broadcast_to(k, boot.shape) for k in rows], boot) for rows in assembled],
                      axis=0)  # fmt: skip
    floor = float(np.mean([scorer.binomial_variance(rows) for rows in assembled]))
    low, high = _interval(point, float(np.var(samples)), floor, floor, level)
    singles = [scorer.score(scorer.correct(c)) for c in candidates]
    how = (f"greedy selection with replacement re-run on {folds - 1} of {folds} class-stratified folds of val, the "
           f"chosen ensemble scored on the held fold, averaged over {repeats} fold assignments")  # fmt: skip
    return EnsembleChoice(counts, full, Scored(point, low, high).to_dict(), singles, how)
