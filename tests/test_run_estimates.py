"""A run's estimates come from its stored epochs and land in metrics.json beside the best-epoch score."""

from __future__ import annotations

import numpy as np
import pytest

from fh_utils.io import read_json, write_json
from fh_utils.runs import EPOCH_PREDICTIONS_FILE, METRICS_FILE
from fh_utils.scoring.estimates import EstimateSettings
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.scoring.report import describe, estimate_summary, write_run_estimates
from fh_utils.tasks import ST2

FAST = EstimateSettings(folds=3, repeats=2, bootstrap=20)


def _run(tmp_path, epochs=6, n=90, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 18, (n, 1))
    record = EpochPredictions.start(
        {"Color": np.zeros(18)}, targets, [f"{i}.jpg" for i in range(n)], ["val"] * n, np.arange(n)
    )
    for e in range(1, epochs + 1):
        logits = rng.normal(size=(n, 18))
        logits[np.arange(n), targets[:, 0]] += 0.3 * e  # later epochs learn more
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        record = record.append(e, {"Color": p})
    record.save(tmp_path / EPOCH_PREDICTIONS_FILE)
    write_json(tmp_path / METRICS_FILE, {"score": 0.5, "epoch": 3, "task": "st2"})
    return record


def test_estimates_are_written_beside_the_best_epoch_and_hold_their_points(tmp_path):
    _run(tmp_path)
    estimates = write_run_estimates(tmp_path, ST2, "best", FAST)
    metrics = read_json(tmp_path / METRICS_FILE)
    assert metrics["score"] == 0.5 and metrics["epoch"] == 3, "the best-epoch numbers are left as they were"
    assert metrics["estimates"]["estimate"]["rule"] == "best"
    assert metrics["estimates"]["estimate"]["how"].startswith("epoch chosen on 2 of 3 class-stratified folds")
    for part in ("best_epoch", "last_epoch", "last3", "estimate"):
        p = metrics["estimates"][part]
        assert p["low"] <= p["score"] <= p["high"], part
    assert metrics["estimates"]["last_epoch"]["epoch"] == 6 and metrics["estimates"]["last3"]["epochs"] == [4, 5, 6]
    assert estimates["estimate"]["score"] <= estimates["best_epoch"]["score"]
    summary = estimate_summary(metrics)
    assert summary["estimate"] == pytest.approx(estimates["estimate"]["score"])
    assert "trust this one" in describe(estimates)


def test_the_last_rule_is_estimated_by_the_last_epoch_and_old_runs_have_none(tmp_path):
    _run(tmp_path)
    est = write_run_estimates(tmp_path, ST2, "last", FAST)
    assert est["estimate"]["score"] == est["last_epoch"]["score"]
    old = tmp_path / "old"
    old.mkdir()
    write_json(old / METRICS_FILE, {"score": 0.4})
    assert write_run_estimates(old, ST2) is None
    assert read_json(old / METRICS_FILE) == {"score": 0.4}
    assert estimate_summary({"score": 0.4})["estimate"] is None
