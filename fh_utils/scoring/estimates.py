"""Honest scores: what a checkpoint will score on photos it was not chosen on, each with a 90 % interval.

Everything here is computed from stored probabilities (every epoch's, or one checkpoint's) and the labels: a
choice (epoch, rule, members) can be re-made and re-scored without retraining.

- **best epoch**: the highest val score over the epochs. Optimistic: the epoch was chosen on the rows it is
  scored on, and with a few photos in the rarest classes the luckiest epoch wins.
- **last epoch** and **mean of the last three**: no choice was made on val, so nothing is flattered.
- **estimate of the saved checkpoint**: for a checkpoint chosen on val (rule ``"best"``), repeated
  class-stratified K-fold *selection*: the epoch is chosen on K-1 folds of val and scores the held fold with
  that epoch's predictions, so every row is scored by an epoch chosen without it; averaged over repetitions.
  For a checkpoint nothing chose on val (``"last"``, weight averages, re-trained classifiers) its val score is
  already unbiased and is the estimate.

Intervals are prediction intervals for the score on a *new* set of photos with val's class counts (what a
leaderboard test set is): the class-stratified bootstrap spread of the number (rows resampled within their
class, so ACSA's class balance holds; the K-fold selection is re-run in every replicate), plus the spread a new
set of photos adds. A class with one or two val photos has no bootstrap spread at all, so both terms are
floored at the binomial variance of each class's accuracy (smoothed, ``(k + 0.5) / (n + 1)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from fh_utils.data.folds import assign_folds
from fh_utils.tasks import Task

LEVEL = 0.9
FOLDS, REPEATS, BOOTSTRAP = 5, 10, 200
_CHUNK = 25  # bootstrap replicates scored at once: bounds the (replicates, epochs, rows) array


@dataclass(frozen=True)
class Scored:
    """A score with its interval.

    Attributes:
        score: The number.
        low: Lower end of the interval.
        high: Upper end.
        epoch: The epoch it belongs to (1-based), when it is one epoch's.
    """

    score: float
    low: float
    high: float
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class Scorer:
    """A task's score as sums over rows, so any weighting of the rows is scored in one matrix product.

    A head scored by ACSA has one group per class present in the labels; a top-1 head one group of all rows.
    The head's score is the mean accuracy over its groups that have rows (weight > 0); the task score is the
    mean over heads, as :func:`fh_utils.training.metrics.task_metrics` computes it.

    Args:
        task: The task (its metric and heads).
        targets: ``(N, n_heads)`` labels.
    """

    def __init__(self, task: Task, targets: np.ndarray):
        targets = np.asarray(targets, dtype=np.int64).reshape(len(targets), -1)
        self.task, self.targets = task, targets
        self.onehots: list[np.ndarray] = []
        for j, head in enumerate(task.heads):
            y = targets[:, j]
            if task.metric == "acsa":
                present = np.unique(y[(y >= 0) & (y < head.num_classes)])
                self.onehots.append((y[:, None] == present[None, :]).astype(np.float64))
            else:
                self.onehots.append(((y >= 0) & (y < head.num_classes)).astype(np.float64)[:, None])

    @property
    def n_rows(self) -> int:
        """Rows scored."""
        return len(self.targets)

    def correct(self, probabilities: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Per head, whether the argmax is the label: ``(..., N)`` booleans for ``(..., N, C)`` probabilities."""
        return [np.asarray(probabilities[h.column]).argmax(-1) == self.targets[:, j]
                for j, h in enumerate(self.task.heads)]  # fmt: skip

    def _head_scores(self, numer: np.ndarray, denom: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), np.nan)
        return np.nanmean(acc, axis=-1)

    def epoch_scores(self, correct: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        """``(B, E)`` scores of every epoch under each of ``B`` row weightings.

        Args:
            correct: Per head ``(E, N)`` booleans (:meth:`correct` of every epoch's probabilities).
            weights: ``(B, N)`` non-negative row weights (bootstrap counts, a fold mask, or ones).
        """
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        total = 0.0
        for k, onehot in zip(correct, self.onehots):
            numer = (weights[:, None, :] * k[None, :, :]) @ onehot  # (B, E, groups)
            denom = (weights @ onehot)[:, None, :]
            total = total + self._head_scores(numer, denom)
        return total / len(self.onehots)

    def row_scores(self, correct: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        """``(B,)`` scores when each weighting ``b`` has its own correctness ``correct[h][b]`` (``(B, N)``)."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        total = 0.0
        for k, onehot in zip(correct, self.onehots):
            total = total + self._head_scores((weights * k) @ onehot, weights @ onehot)
        return total / len(self.onehots)

    def score(self, correct: list[np.ndarray]) -> float:
        """The plain score of one set of predictions (per head ``(N,)`` booleans)."""
        return float(self.row_scores([np.asarray(k)[None] for k in correct], np.ones((1, self.n_rows)))[0])

    def binomial_variance(self, correct: list[np.ndarray], counts_scale: float = 1.0) -> float:
        """Variance of the score from each group's accuracy as a binomial proportion, smoothed.

        ``(k + 0.5) / (n + 1)`` keeps a group of one photo (or one always right) from claiming no spread.
        ``counts_scale`` rescales every group's size (a new set of another size than val).
        """
        var = 0.0
        for k, onehot in zip(correct, self.onehots):
            n = onehot.sum(0)
            hits = np.asarray(k, dtype=np.float64) @ onehot
            p = (hits + 0.5) / (n + 1.0)
            present = n > 0
            var += float(np.sum(p[present] * (1 - p[present]) / (n[present] * counts_scale)) / present.sum() ** 2)
        return var / len(self.onehots) ** 2


def stratified_bootstrap(labels: np.ndarray, replicates: int, seed: int = 0) -> np.ndarray:
    """``(replicates, N)`` counts: every class's rows resampled with replacement, its size kept."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    counts = np.zeros((replicates, len(labels)), dtype=np.float64)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        picks = rng.integers(0, len(rows), size=(replicates, len(rows)))
        for b in range(replicates):
            np.add.at(counts[b], rows[picks[b]], 1.0)
    return counts


def fold_assignments(labels: np.ndarray, folds: int, repeats: int, seed: int = 0) -> np.ndarray:
    """``(repeats, N)`` class-stratified fold ids (:func:`fh_utils.data.folds.assign_folds`), one seed each."""
    return np.stack([assign_folds(labels, folds, seed + r) for r in range(repeats)])


def selected_on_other_folds(scorer: Scorer, correct: list[np.ndarray], weights: np.ndarray,
                            fold_ids: np.ndarray) -> np.ndarray:  # fmt: skip
    """``(B,)`` scores of the epoch choice "best on val", each fold scored by the epoch the other folds chose.

    For every repetition (a row of ``fold_ids``) and fold: the epoch with the best score on the other folds
    (the first one on a tie, as training keeps it) gives the predictions of the fold's rows; the assembled
    predictions are scored under the same weights, and the repetitions averaged. A row never helps choose the
    epoch that scores it.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    total = np.zeros(len(weights))
    for assignment in fold_ids:
        assembled = [np.zeros(weights.shape, dtype=bool) for _ in correct]
        for fold in np.unique(assignment):
            held = assignment == fold
            chosen = scorer.epoch_scores(correct, weights * ~held).argmax(axis=1)  # (B,)
            for h, k in enumerate(correct):
                assembled[h][:, held] = k[chosen[:, None], np.flatnonzero(held)[None, :]]
        total += scorer.row_scores(assembled, weights)
    return total / len(fold_ids)


def _interval(point: float, boot_var: float, floor_var: float, new_var: float, level: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * float(np.sqrt(max(boot_var, floor_var) + new_var))
    return max(0.0, point - half), min(1.0, point + half)


@dataclass
class EstimateSettings:
    """How the estimates are made (recorded beside them).

    Attributes:
        folds: K of the K-fold selection.
        repeats: Repetitions of the K-fold selection (each a new stratified assignment).
        bootstrap: Class-stratified bootstrap replicates for the intervals.
        level: Interval level.
        seed: Seed of the fold assignments and the bootstrap.
    """

    folds: int = FOLDS
    repeats: int = REPEATS
    bootstrap: int = BOOTSTRAP
    level: float = LEVEL
    seed: int = 0


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(n, i + _CHUNK)) for i in range(0, n, _CHUNK)]


def epoch_estimates(
    task: Task,
    targets: np.ndarray,
    probabilities: dict[str, np.ndarray],
    rule: str = "best",
    checkpoint_probabilities: dict[str, np.ndarray] | None = None,
    settings: EstimateSettings | None = None,
) -> dict[str, Any]:
    """The numbers a run reports: best epoch, last epoch, mean of the last three, and the honest estimate.

    Args:
        task: The task.
        targets: ``(N, n_heads)`` val labels.
        probabilities: ``{column: (E, N, C)}``, every epoch's val probabilities.
        rule: How the saved checkpoint was chosen: ``"best"`` (the best val epoch: estimated by K-fold
            selection), ``"last"`` (the last epoch), or any rule whose checkpoint nothing chose on val (then
            ``checkpoint_probabilities`` are its val probabilities and its val score is the estimate).
        checkpoint_probabilities: ``{column: (N, C)}`` of the saved checkpoint, for rules other than best/last.
        settings: Folds, repetitions, bootstrap replicates, level, seed.

    Returns:
        ``{"best_epoch", "last_epoch", "last3", "estimate"}``, each :meth:`Scored.to_dict` (``estimate`` with
        ``"rule"`` and ``"how"``), and ``"settings"``.
    """
    s = settings or EstimateSettings()
    scorer = Scorer(task, targets)
    correct = scorer.correct(probabilities)  # per head (E, N)
    n_epochs = correct[0].shape[0]
    observed = scorer.epoch_scores(correct, np.ones((1, scorer.n_rows)))[0]
    best = int(np.argmax(observed))
    last3 = slice(max(0, n_epochs - 3), n_epochs)
    strata = scorer.targets[:, 0]
    boot = stratified_bootstrap(strata, s.bootstrap, s.seed)
    folds = fold_assignments(strata, s.folds, s.repeats, s.seed)

    boot_epochs = np.concatenate([scorer.epoch_scores(correct, boot[c]) for c in _chunks(len(boot))])  # (B, E)
    out: dict[str, Any] = {}

    def scored(point: float, samples: np.ndarray, at: list[np.ndarray], epoch: int | None) -> dict:
        low, high = _interval(point, float(np.var(samples)), scorer.binomial_variance(at),
                              scorer.binomial_variance(at), s.level)  # fmt: skip
        return Scored(float(point), low, high, epoch).to_dict()

    out["best_epoch"] = scored(observed[best], boot_epochs[:, best], [k[best] for k in correct], best + 1)
    out["last_epoch"] = scored(observed[-1], boot_epochs[:, -1], [k[-1] for k in correct], n_epochs)
    out["last3"] = scored(float(observed[last3].mean()), boot_epochs[:, last3].mean(axis=1),
                          [k[-1] for k in correct], None)  # fmt: skip
    out["last3"]["epochs"] = [int(e) + 1 for e in range(n_epochs)[last3]]
    if rule == "best":
        point = float(selected_on_other_folds(scorer, correct, np.ones((1, scorer.n_rows)), folds)[0])
        samples = np.concatenate([selected_on_other_folds(scorer, correct, boot[c], folds) for c in _chunks(len(boot))])
        estimate = scored(point, samples, [k[best] for k in correct], None)
        how = (f"epoch chosen on {s.folds - 1} of {s.folds} class-stratified folds of val, scored on the held fold, "
               f"averaged over {s.repeats} fold assignments")  # fmt: skip
    elif rule == "last" or checkpoint_probabilities is None:
        estimate, how = dict(out["last_epoch"]), "the last epoch's val score: nothing was chosen on val"
    else:
        ck = scorer.correct(checkpoint_probabilities)
        point = scorer.score(ck)
        samples = scorer.row_scores([np.broadcast_to(k, boot.shape) for k in ck], boot)
        estimate = scored(point, samples, ck, None)
        how = f"the {rule} checkpoint's val score: nothing was chosen on val"
    estimate.update(rule=rule, how=how)
    out["estimate"] = estimate
    out["settings"] = {**asdict(s), "interval": f"{s.level:.0%} for a new set of photos with val's class counts"}
    return out
