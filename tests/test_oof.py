"""Out-of-fold gathering and the nested cross-validated score (pure functions: no training)."""

from __future__ import annotations

import numpy as np
import pytest

from fh_utils.scoring.estimates import EstimateSettings
from fh_utils.scoring.oof import FoldSetError, cross_validated, gather_folds
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import ST2

SETTINGS = EstimateSettings(bootstrap=20)


def _fold_runs(n_train=12, n_val=6, n_folds=3, epochs=4, seed=0):
    """Fold k holds out every row whose index in the pooled (train, val) order is k modulo n_folds."""
    rng = np.random.default_rng(seed)
    sources = np.array(["train"] * n_train + ["val"] * n_val)
    rows = np.concatenate([np.arange(n_train), np.arange(n_val)])
    targets = rng.integers(0, 18, size=(n_train + n_val, 1))
    probs = rng.dirichlet(np.ones(18), size=(epochs, n_train + n_val)).astype(np.float16)
    runs = {}
    for k in range(n_folds):
        held = np.arange(n_train + n_val) % n_folds == k
        runs[k] = EpochPredictions(np.arange(1, epochs + 1), {"Color": probs[:, held]}, targets[held],
                                   np.array([f"{s}/{r}.jpg" for s, r in zip(sources[held], rows[held])]),
                                   sources[held], rows[held])  # fmt: skip
    return runs, targets, probs


def test_gathered_rows_are_every_row_once_in_csv_order_with_their_fold():
    runs, targets, probs = _fold_runs()
    oof = gather_folds(runs, 3)
    assert oof.source.tolist() == ["train"] * 12 + ["val"] * 6
    assert oof.row.tolist() == list(range(12)) + list(range(6))
    assert oof.fold.tolist() == [i % 3 for i in range(18)]
    np.testing.assert_array_equal(oof.targets, targets)
    np.testing.assert_array_equal(oof.probabilities["Color"], probs)


def test_a_row_held_out_twice_or_by_no_fold_or_a_missing_fold_is_refused():
    runs, *_ = _fold_runs()
    twice = dict(runs)
    twice[1] = EpochPredictions(
        runs[1].epochs,
        {"Color": np.concatenate([runs[1].probabilities["Color"], runs[0].probabilities["Color"][:, :1]], 1)},
        np.concatenate([runs[1].targets, runs[0].targets[:1]]),
        np.append(runs[1].image_name, runs[0].image_name[0]),
        np.append(runs[1].source, runs[0].source[0]),
        np.append(runs[1].row, runs[0].row[0]),
    )
    with pytest.raises(FoldSetError, match=r"1 row\(s\) held out by more than one fold.*train:0"):
        gather_folds(twice, 3, names={0: "t0", 1: "t1", 2: "t2"})
    dropped = dict(runs)
    dropped[2] = EpochPredictions(
        runs[2].epochs,
        {"Color": runs[2].probabilities["Color"][:, 1:]},
        runs[2].targets[1:],
        runs[2].image_name[1:],
        runs[2].source[1:],
        runs[2].row[1:],
    )
    with pytest.raises(FoldSetError, match=r"1 train row\(s\) held out by no fold, e.g. rows \[2\]"):
        gather_folds(dropped, 3)
    with pytest.raises(FoldSetError, match=r"no run for fold\(s\) \[2\] of 3"):
        gather_folds({0: runs[0], 1: runs[1]}, 3)


def test_folds_of_different_lengths_share_their_common_epochs():
    runs, *_ = _fold_runs(epochs=4)
    runs[1] = runs[1].first(2)
    assert gather_folds(runs, 3).epochs.tolist() == [1, 2]


def test_each_fold_is_scored_at_the_epoch_count_the_other_folds_chose():
    """One class; epoch e is right exactly on fold e's rows: pooled, every epoch scores 1/3 and the full-fit count
    is the first; each fold's own epoch is never the one the others choose, so the nested score is 0."""
    runs, targets, _ = _fold_runs(n_train=12, n_val=6, epochs=3)
    for k, run in runs.items():
        run.targets[:] = 0
        probs = np.full((3, run.n_rows, 18), 1 / 18, dtype=np.float16)
        wrong = (run.targets[:, 0] + 1) % 18
        for e in range(3):
            probs[e, np.arange(run.n_rows), run.targets[:, 0] if e == k else wrong] = 1
        run.probabilities["Color"] = probs
    report = cross_validated(ST2, gather_folds(runs, 3), SETTINGS)
    assert report["per_epoch"] == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})
    assert report["epochs"] == 1
    assert report["per_fold_epochs"] == {0: 2, 1: 1, 2: 1}
    assert report["score"]["score"] == 0.0
    assert report["score"]["low"] <= report["score"]["score"] <= report["score"]["high"]


def test_the_val_rows_score_is_the_nested_score_of_the_val_csvs_rows_alone():
    """Train rows always wrong, val rows right from epoch 2 on: every row's score is dragged down by train, the
    val rows' score is 1 (chosen on the other folds' val rows); its interval holds it; no val rows, no entry."""
    runs, _, _ = _fold_runs(n_train=12, n_val=9, epochs=3)
    for run in runs.values():
        run.targets[:] = np.arange(run.n_rows)[:, None] % 2  # two classes, in train and in val
        probs = np.full((3, run.n_rows, 18), 1 / 18, dtype=np.float16)
        right, wrong = run.targets[:, 0], 1 - run.targets[:, 0]
        val = run.source == "val"
        for e in range(3):
            probs[e, np.arange(run.n_rows), np.where(val & (e > 0), right, wrong)] = 1
        run.probabilities["Color"] = probs
    report = cross_validated(ST2, gather_folds(runs, 3), SETTINGS)
    assert report["score"]["score"] < 0.5
    val = report["val_rows"]
    assert val["score"] == 1.0 and val["rows"] == 9 and val["low"] <= 1.0 <= val["high"]
    train_only = {k: r for k, r in _fold_runs(n_train=12, n_val=0, epochs=3)[0].items()}
    assert cross_validated(ST2, gather_folds(train_only, 3), SETTINGS)["val_rows"] is None
