"""Notebook 08's package side on hand-made predictions: the worst-loss rows, misses per class, the majority-class
baseline, calibration (a known ECE), the crop's dominant colour, and loading a run's or a fold sweep's stored
probabilities (no model, no images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fh_utils.io import write_json
from fh_utils.scoring.calibration import calibration_table, expected_calibration_error, reliability_bins
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import ST1, ST2
from fh_utils.workbook import error_sets as S
from fh_utils.workbook import errors as E


def _error_set(task=ST2, n=60, seed=0, coverage=S.OUT_OF_FOLD) -> S.ErrorSet:
    rng = np.random.default_rng(seed)
    probs = {h.column: rng.dirichlet(np.ones(h.num_classes) * 0.5, size=n) for h in task.heads}
    targets = np.stack([rng.integers(0, h.num_classes, n) for h in task.heads], 1)
    ids = {"image_name": [f"img{i}.jpg" for i in range(n)], "source": ["val"] * n, "row": np.arange(n)}
    frame = S.frame_from_probabilities(task, probs, targets, ids)
    return S.ErrorSet(task, frame, coverage, folder=None, what="hand-made")


@pytest.mark.parametrize("task", [ST2, ST1])
def test_the_worst_loss_rows_are_the_highest_losses_highest_first(task):
    errors = _error_set(task)
    for j, head in enumerate(task.heads):
        worst = E.worst_losses(errors, head.column, n=10)
        truth = errors.targets()[:, j]
        loss = -np.log(errors.probabilities(head.column)[np.arange(60), truth])
        np.testing.assert_allclose(worst["loss"], np.sort(loss)[::-1][:10])  # the 10 largest, in descending order
        np.testing.assert_allclose(worst["loss"], -np.log(worst["p_true"]))  # each row's loss is its own
        assert (worst["image_name"] == [f"img{i}.jpg" for i in worst["index"]]).all()
        assert (worst["true"] == [head.class_names[c] for c in truth[worst["index"]]]).all()


def test_misses_per_class_come_rarest_training_class_first_with_only_misses():
    errors = _error_set(ST2, n=200)
    summary, examples = E.misses_by_class(errors, "Color", per_class=3)
    counts = np.bincount(errors.targets()[:, 0], minlength=18)
    assert summary["train_rows"].tolist() == sorted(counts.tolist())  # out-of-fold: all rows count as training
    assert summary["class"].tolist()[0] == ST2.heads[0].class_names[int(np.argmin(counts))]
    for name, rows in examples.items():
        assert (rows["true"] == name).all() and (rows["pred"] != name).all() and len(rows) <= 3
        assert rows["loss"].is_monotonic_decreasing


def test_the_majority_baseline_predicts_the_most_frequent_training_class():
    errors = _error_set(ST1, n=120, seed=3)
    table = E.baseline_table(errors)
    targets = errors.targets()
    for j, head in enumerate(ST1.heads):
        row = table[table["head"] == head.column].iloc[0]
        majority = np.bincount(targets[:, j], minlength=head.num_classes).argmax()
        assert row["majority_class"] == head.class_names[majority]
        assert row["majority_top1"] == pytest.approx(np.mean(targets[:, j] == majority))
        assert row["majority_acsa"] == pytest.approx(1 / len(np.unique(targets[:, j])))
        assert row["top1"] == pytest.approx(np.mean(targets[:, j] == errors.predictions()[:, j]))
    last = table.iloc[-1]
    assert last["majority_score"] == pytest.approx(table["majority_top1"].iloc[:3].mean())  # ST1: mean top-1


def test_the_expected_calibration_error_of_a_hand_made_case():
    # 6 rows at confidence 0.95 (3 right: gap 0.45) and 2 at 0.65 (both right: gap 0.35), weighted by rows:
    # ECE = 6/8 * 0.45 + 2/8 * 0.35 = 0.425 (an unweighted mean of the gaps would give 0.40).
    probs = np.array([[0.95, 0.05]] * 6 + [[0.35, 0.65]] * 2)
    targets = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    assert expected_calibration_error(probs, targets, n_bins=10) == pytest.approx(0.425)
    bins = reliability_bins(probs, targets, n_bins=10)
    assert bins["rows"].tolist() == [0] * 6 + [2, 0, 0, 6]
    assert bins.loc[9, "accuracy"] == 0.5 and bins.loc[6, "accuracy"] == 1.0
    # Calibrated: 10 rows at 0.7 confidence, 7 of them right.
    calibrated = np.array([[0.7, 0.3]] * 10)
    assert expected_calibration_error(calibrated, np.array([0] * 7 + [1] * 3), n_bins=10) == pytest.approx(0.0)
    unlabelled = np.vstack([probs, [[0.99, 0.01]]])  # a row without a label (-1) is left out
    table, _ = calibration_table({"Color": unlabelled}, np.append(targets, -1)[:, None], ST2, n_bins=10)
    assert table.loc[0, "ece"] == pytest.approx(0.425) and table.loc[0, "rows"] == 8


def test_the_dominant_colour_is_the_garments_not_the_border():
    crop = np.full((40, 40, 3), 250, dtype=np.uint8)  # white background
    crop[8:32, 8:32] = (200, 28, 38)  # a red garment filling the centre half
    crop[12:16, 12:16] = (24, 34, 82)  # a small navy print
    assert E.dominant_color(crop) == (200, 28, 38)


def test_a_runs_stored_epochs_load_at_the_epoch_of_the_checkpoint_it_submits(tmp_path):
    """Without probabilities in val_predictions.csv, val_epochs.npz at metrics.json's best epoch is read (rule
    best, or a run from before rules); under rule last, the last epoch; under avg, the average's val_avg.npz."""
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(18), size=(3, 20)).astype(np.float16)
    targets = rng.integers(0, 18, (20, 1))
    EpochPredictions(np.arange(1, 4), {"Color": probs}, targets, np.array([f"v{i}.jpg" for i in range(20)]),
                     np.array(["val"] * 20), np.arange(20)).save(tmp_path / "val_epochs.npz")  # fmt: skip
    write_json(tmp_path / "metrics.json", {"task": "st2", "epoch": 2})
    errors = S.load_errors(str(tmp_path))
    assert errors.coverage == S.VAL_ONLY and "validation rows only" in errors.describe()
    expected = probs[1].astype(np.float64)
    np.testing.assert_allclose(errors.probabilities("Color"), expected / expected.sum(1, keepdims=True), atol=1e-6)
    assert (errors.frame["color_pred"] == expected.argmax(1)).all()
    write_json(tmp_path / "metrics.json", {"task": "st2", "epoch": 2, "checkpoint": {"rule": "last"}})
    expected = probs[2].astype(np.float64)
    np.testing.assert_allclose(S.load_errors(str(tmp_path)).probabilities("Color"),
                               expected / expected.sum(1, keepdims=True), atol=1e-6)  # fmt: skip
    average = rng.dirichlet(np.ones(18), size=(1, 20)).astype(np.float16)
    EpochPredictions(np.array([3]), {"Color": average}, targets, np.array([f"v{i}.jpg" for i in range(20)]),
                     np.array(["val"] * 20), np.arange(20)).save(tmp_path / "val_avg.npz")  # fmt: skip
    write_json(tmp_path / "metrics.json", {"task": "st2", "epoch": 2, "checkpoint": {"rule": "avg"}})
    expected = average[0].astype(np.float64)
    np.testing.assert_allclose(S.load_errors(str(tmp_path)).probabilities("Color"),
                               expected / expected.sum(1, keepdims=True), atol=1e-6)  # fmt: skip
    # the checkpoint a team submits instead (notebook 08's checkpoint): the last epoch's, or cRT's own file
    np.testing.assert_allclose(S.load_errors(str(tmp_path), checkpoint="last").probabilities("Color"),
                               probs[2] / probs[2].astype(np.float64).sum(1, keepdims=True), atol=1e-6)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no val_crt.npz.*crt_epochs > 0"):
        S.load_errors(str(tmp_path), checkpoint="crt")
    retrained = rng.dirichlet(np.ones(18), size=(1, 20)).astype(np.float16)
    EpochPredictions(np.array([3]), {"Color": retrained}, targets, np.array([f"v{i}.jpg" for i in range(20)]),
                     np.array(["val"] * 20), np.arange(20)).save(tmp_path / "val_crt.npz")  # fmt: skip
    crt = S.load_errors(str(tmp_path), checkpoint="crt")
    assert "'crt' checkpoint" in crt.what
    np.testing.assert_allclose(crt.probabilities("Color"), retrained[0] / retrained[0].astype(np.float64).sum(
        1, keepdims=True), atol=1e-6)  # fmt: skip


def test_a_fold_sweeps_oof_file_covers_every_row(tmp_path):
    rng = np.random.default_rng(2)
    n = 30
    targets = rng.integers(0, 18, (n, 1))
    good = np.eye(18)[targets[:, 0]] * 0.8 + 0.2 / 18  # epoch 2 is right everywhere, epoch 1 is noise
    probs = np.stack([rng.dirichlet(np.ones(18), size=n), good]).astype(np.float16)
    source = np.array(["train"] * 20 + ["val"] * 10)
    oof = EpochPredictions(np.array([1, 2]), {"Color": probs}, targets, np.array([f"i{i}" for i in range(n)]), source,
                           np.r_[np.arange(20), np.arange(10)], np.arange(n) % 3)  # fmt: skip
    path = oof.save(tmp_path / "sweep" / "oof" / "recipe__seed0.npz")
    errors = S.load_errors(sweep=str(path))
    assert errors.coverage == S.OUT_OF_FOLD and errors.task.name == "st2" and len(errors.frame) == n
    assert errors.folder == tmp_path / "sweep" and "epoch 2" in errors.what  # the best out-of-fold epoch
    assert errors.frame["source"].tolist() == source.tolist()
    assert errors.frame["fold"].tolist() == (np.arange(n) % 3).tolist()
    assert isinstance(errors.frame, pd.DataFrame) and "validation rows only" not in errors.describe()


def test_a_fold_sweep_folder_is_gathered_when_it_has_no_oof_file_yet(tmp_path, monkeypatch):
    """``sweep=<folder>`` without ``python -m fh_utils oof`` run first: the folds are gathered, and every row of train
    and val comes back once with the fold that held it out."""
    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path / "out"))
    root, n_train, n_val = tmp_path / "runs", 24, 12
    source = np.array(["train"] * n_train + ["val"] * n_val)
    row = np.r_[np.arange(n_train), np.arange(n_val)]
    targets = (np.arange(n_train + n_val) % 18)[:, None]
    for k in range(3):
        held = np.arange(n_train + n_val) % 3 == k
        probs = np.eye(18)[targets[held, 0]] * 0.5 + 0.5 / 18
        names = [f"{i}.jpg" for i in np.flatnonzero(held)]
        record = EpochPredictions.start({"Color": np.zeros(18)}, targets[held], names, source[held], row[held])
        record = record.append(1, {"Color": probs})
        folder = root / "folds" / f"t{k}"
        folder.mkdir(parents=True)
        record.save(folder / "val_epochs.npz")
        write_json(folder / "metrics.json", {"score": 1.0, "task": "st2", "epoch": 1})
        write_json(folder / "config.json", {"data": {"split": f"fold:{k}/3"}, "train": {"seed": 0}})
    errors = S.load_errors(sweep=str(root / "folds"))
    assert (root / "folds" / "oof" / "oof_report.json").exists()
    assert errors.coverage == S.OUT_OF_FOLD and len(errors.frame) == n_train + n_val
    assert errors.frame["source"].tolist() == source.tolist() and errors.frame["row"].tolist() == row.tolist()
    assert errors.frame["fold"].tolist() == (np.arange(n_train + n_val) % 3).tolist()
    assert (errors.frame["color_pred"] == targets[:, 0]).all()
