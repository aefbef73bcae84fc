"""A dry run on rows its runs trained on says so, and never calls that a validation score (issue 29.7)."""

from __future__ import annotations

import pandas as pd

from fh_utils.io import write_json
from fh_utils.leaderboard.dry_run import DryRun, trained_rows_note


def _run(tmp_path, name, split):
    folder = tmp_path / name
    folder.mkdir()
    write_json(folder / "config.json", {"data": {"split": split, "data_root": str(tmp_path / "data")}})
    return str(folder)


def test_full_and_fold_runs_scored_on_their_own_data_are_marked(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    val, full, fold = _run(tmp_path, "v", "val"), _run(tmp_path, "f", "full"), _run(tmp_path, "k", "fold:1/5")
    assert trained_rows_note({str(root): [val]}, root, "val") == ""
    assert trained_rows_note({str(root): [val]}, root, "train") == "v: split=val"
    assert trained_rows_note({str(root): [full, fold]}, root, "val") == "f: split=full; k: split=fold:1/5"
    assert trained_rows_note({str(root): [full]}, tmp_path / "elsewhere", "val") == "", "another data root"
    assert trained_rows_note({str(root): [full]}, root, "test") == ""


def test_the_score_line_names_what_the_score_is():
    dry = DryRun(rows=1, seconds=0.0, total_seconds=0.0, score=0.61234, predictions=pd.DataFrame(), output="")
    assert dry.score_line() == "validation score 0.6123"
    dry.trained_on_rows = "f: split=full"
    assert dry.score_line() == "score 0.6123 on rows the runs trained on (f: split=full): not a validation score"
    dry.score = None
    assert dry.score_line() == "no score (the CSV has no labels)"
