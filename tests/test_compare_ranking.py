"""Notebook 06 and top_k.json rank runs by the honest estimate, not by the luckiest epoch."""

from __future__ import annotations

import json

import pytest

from fh_utils.io import write_json
from fh_utils.workbook import compare


def _runs(root):
    # lucky: the best best-epoch score, the worst estimate; steady: the best estimate; old: no estimate at all
    for name, score, estimate in [("lucky", 0.70, 0.52), ("steady", 0.66, 0.60), ("old", 0.58, None)]:
        folder = root / name
        folder.mkdir(parents=True)
        est = {"estimate": {"score": estimate, "low": estimate - 0.05, "high": estimate + 0.05, "rule": "best"},
               "last_epoch": {"score": 0.6, "low": 0.5, "high": 0.7, "epoch": 12},
               "last3": {"score": 0.59, "low": 0.5, "high": 0.7}} if estimate else None  # fmt: skip
        write_json(folder / "metrics.json", {"score": score, "task": "st2", "epoch": 3,
                                             **({"estimates": est} if est else {})})  # fmt: skip
        write_json(folder / "state.json", {"state": "finished"})


def test_runs_are_ranked_by_their_estimate_and_top_k_records_it(tmp_path):
    _runs(tmp_path / "runs")
    frame = compare.collect_runs(tmp_path / "runs")
    assert list(compare.comparison_table(frame)["run"]) == ["steady", "old", "lucky"]
    assert list(compare.comparison_table(frame, rank_by="score")["run"]) == ["lucky", "steady", "old"]
    assert list(compare.top_k_runs(frame, 2)["run"]) == ["steady", "old"]
    top = json.loads(compare.write_top_k(tmp_path, frame, 3).read_text())
    assert top["rank_by"] == "estimate"
    assert [(r["run"], r["estimate"], r["score"]) for r in top["runs"]] == [
        ("steady", 0.60, 0.66),
        ("old", None, 0.58),
        ("lucky", 0.52, 0.70),
    ]
    assert top["runs"][0]["estimate_low"] == pytest.approx(0.55)
    row = frame.set_index("run").loc["lucky"]
    assert row["last_epoch_score"] == 0.6 and row["last3_score"] == 0.59
    with pytest.raises(ValueError, match="rank_by 'luck'"):
        compare.comparison_table(frame, rank_by="luck")


def test_the_ledger_figure_waits_for_a_leaderboard_score(tmp_path):
    from fh_utils.ledger import LedgerRow, append_submission, read_ledger, record_leaderboard

    path = tmp_path / "ledger.csv"
    append_submission(LedgerRow("a", "st2", "r1", estimate=0.6, estimate_low=0.55, estimate_high=0.65,
                                best_epoch_score=0.7), path)  # fmt: skip
    assert compare.estimate_vs_leaderboard(read_ledger(path)) is None
    record_leaderboard("a", 0.62, path)
    fig = compare.estimate_vs_leaderboard(read_ledger(path))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "leaderboard score" and [t.get_text() for t in ax.texts] == ["a"]


def test_a_parameter_one_task_lacks_is_plotted_as_categories_for_both():
    """A setting new runs record and old ones lack (NaN) must not give one axis numbers and text at once."""
    import pandas as pd

    from fh_utils.workbook.compare import score_vs_parameters

    frame = pd.DataFrame({"task": ["st1", "st2", "st2"], "score": [0.5, 0.6, 0.7],
                          "param_keep_epochs": [5.0, None, 3.0]})  # fmt: skip
    fig = score_vs_parameters(frame, ["keep_epochs"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert sorted(labels) == ["3.0", "5.0", "nan"]
