"""A fold sweep's held-out predictions gathered per recipe and seed, scored, and written without local paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fh_utils.io import write_json
from fh_utils.runs import EPOCH_PREDICTIONS_FILE
from fh_utils.scoring.estimates import EstimateSettings
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.workbook.oof import OOF_DIR, OOF_REPORT, NoFoldRunsError, oof_table, sweep_oof

FAST = EstimateSettings(bootstrap=20)
N_TRAIN, N_VAL, N_FOLDS, EPOCHS = 60, 30, 3, 4


def _fold_run(root, name, k, seed=0, lr=0.001, rows=None):
    rng = np.random.default_rng(k)
    source = np.array(["train"] * N_TRAIN + ["val"] * N_VAL)
    row = np.concatenate([np.arange(N_TRAIN), np.arange(N_VAL)])
    held = (np.arange(N_TRAIN + N_VAL) % N_FOLDS == k) if rows is None else rows
    targets = (np.arange(N_TRAIN + N_VAL) % 18)[held][:, None]
    record = EpochPredictions.start({"Color": np.zeros(18)}, targets, [f"{i}.jpg" for i in range(held.sum())],
                                    source[held], row[held])  # fmt: skip
    for e in range(1, EPOCHS + 1):
        p = rng.dirichlet(np.ones(18), size=int(held.sum()))
        p[np.arange(len(p)), targets[:, 0]] += 0.05 * e
        record = record.append(e, {"Color": p / p.sum(1, keepdims=True)})
    folder = root / "fold-sweep" / name
    folder.mkdir(parents=True)
    record.save(folder / EPOCH_PREDICTIONS_FILE)
    write_json(folder / "metrics.json", {"score": 0.5, "task": "st2", "epoch": 2, "validation": f"fold {k}"})
    write_json(folder / "config.json", {"data": {"split": f"fold:{k}/{N_FOLDS}"}, "train": {"seed": seed, "lr": lr}})
    write_json(folder / "state.json", {"state": "finished"})


def _two_recipe_sweep(tmp_path):
    """A fold sweep of two recipes (lr 0.001 and 0.002), every fold of each; returns the runs folder."""
    root = tmp_path / "runs"
    for n, (lr, k) in enumerate((lr, k) for lr in (0.001, 0.002) for k in range(N_FOLDS)):
        _fold_run(root, f"t{n:04d}", k, lr=lr)
    return root


def test_each_recipe_and_seed_gets_one_oof_file_and_a_cross_validated_score(tmp_path):
    root = _two_recipe_sweep(tmp_path)
    groups = sweep_oof("fold-sweep", root, FAST)
    assert [(g.recipe, g.seed, g.problem) for g in groups] == [("lr=0.001", 0, ""), ("lr=0.002", 0, "")]
    for g in groups:
        oof = EpochPredictions.load(root / g.file)
        assert oof.n_rows == N_TRAIN + N_VAL, "every row of train and val once"
        assert list(oof.source[:N_TRAIN]) == ["train"] * N_TRAIN and list(oof.row[N_TRAIN:]) == list(range(N_VAL))
        assert list(oof.fold[:6]) == [0, 1, 2, 0, 1, 2]
        score = g.result["score"]
        assert score["low"] <= score["score"] <= score["high"]
        assert 1 <= g.result["epochs"] <= EPOCHS and "nested" in g.result["how"]
    report = json.loads((root / "fold-sweep" / OOF_DIR / OOF_REPORT).read_text())
    assert report["groups"][0]["runs"] == {"0": "fold-sweep/t0000", "1": "fold-sweep/t0001", "2": "fold-sweep/t0002"}
    assert str(tmp_path) not in json.dumps(report), "the report names runs, not local paths"
    table = oof_table(groups)
    assert list(table["recipe"]) == ["lr=0.001", "lr=0.002"] and table["cv_score"].notna().all()


def test_a_missing_fold_or_a_row_held_twice_is_named_and_other_groups_still_score(tmp_path):
    root = tmp_path / "runs"
    for k in range(N_FOLDS - 1):  # seed 0: fold 2 missing
        _fold_run(root, f"a{k}", k, seed=0)
    everything = np.ones(N_TRAIN + N_VAL, dtype=bool)
    _fold_run(root, "b0", 0, seed=1, rows=everything)  # seed 1: fold 0 holds every row, so rows repeat
    _fold_run(root, "b1", 1, seed=1)
    _fold_run(root, "b2", 2, seed=1)
    groups = {g.seed: g for g in sweep_oof("fold-sweep", root, FAST)}
    assert groups[0].problem == "no run for fold(s) [2] of 3" and groups[0].result is None
    assert "held out by more than one fold" in groups[1].problem and "fold-sweep/b0" in groups[1].problem


def test_a_sweep_without_fold_runs_says_what_it_has(tmp_path):
    folder = tmp_path / "runs" / "plain" / "t0000"
    folder.mkdir(parents=True)
    write_json(folder / "metrics.json", {"score": 0.5, "task": "st2"})
    write_json(folder / "config.json", {"data": {"split": "val"}})
    with pytest.raises(NoFoldRunsError, match=r"no run with split fold:K/N \(runs found: 1, splits: \['val'\]\)"):
        sweep_oof("plain", tmp_path / "runs")


def test_the_oof_command_prints_each_recipe_and_fails_on_an_incomplete_fold_set(tmp_path, capsys):
    from fh_utils.__main__ import main

    root = tmp_path / "runs"
    for k in range(N_FOLDS):
        _fold_run(root, f"t{k:04d}", k)
    assert main(["oof", "fold-sweep", "--runs-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "cv_score" in out and "full_fit_epochs" in out and "default" in out
    (root / "fold-sweep" / "t0002" / EPOCH_PREDICTIONS_FILE).unlink()
    assert main(["oof", "fold-sweep", "--runs-root", str(root)]) == 1
    assert "fold(s) [2] stored no per-epoch predictions" in capsys.readouterr().out


def test_a_full_fit_trains_the_epoch_count_the_cross_validation_chose(tmp_path, demo_root, monkeypatch):
    from fh_utils.workbook.oof import full_fit_epochs
    from fh_utils.workbook.workflow import prepare_training

    root = _two_recipe_sweep(tmp_path)
    groups = {g.recipe: g for g in sweep_oof("fold-sweep", root, FAST)}
    with pytest.raises(ValueError, match=r"recipes: \['lr=0.001', 'lr=0.002'\] \(name one as 'fold-sweep\|<recipe>'\)"):
        full_fit_epochs("fold-sweep", root)
    epochs, note = full_fit_epochs("fold-sweep|lr=0.002", root)
    assert epochs == groups["lr=0.002"].result["epochs"] and "lr=0.002" in note
    with pytest.raises(FileNotFoundError, match="run python -m fh_utils oof other"):
        full_fit_epochs("other", root)
    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path))  # the runs folder is <FH_OUTPUTS>/runs = root
    setup = prepare_training("st2", {"data_root": str(demo_root), "split": "full", "epochs": 99,
                                     "epochs_from": "fold-sweep|lr=0.001", "run_name": "full-fit"})  # fmt: skip
    assert setup.train.epochs == groups["lr=0.001"].result["epochs"] != 99
    assert setup.run["epochs_from"] == "fold-sweep|lr=0.001" and any("cross-validation" in n for n in setup.notes)
