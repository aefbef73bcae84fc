"""Exclusion lists (``DataConfig.exclude``): the listed rows leave training, exactly them, never validation; the
record lands in the split's record; a missing file or one without ``image_name`` is a clear error."""

from __future__ import annotations

import pandas as pd
import pytest

from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import split_rows
from fh_utils.data.exclude import read_exclusion
from fh_utils.tasks import get_task
from fh_utils.workbook import workflow


@pytest.fixture(scope="module")
def plain(demo_root):
    """The demo's ST2 rows without a list (``limit`` keeps the reads small)."""
    cfg = DataConfig(data_root=str(demo_root), limit=80)
    task = get_task("st2", demo_root)
    rows, _ = split_rows(cfg, task, ("train", "val"))
    return cfg, task, rows


def _write(path, names, **columns):
    pd.DataFrame({"image_name": names, **columns}).to_csv(path, index=False)
    return path


def test_the_listed_rows_leave_training_and_only_them(plain, tmp_path):
    cfg, task, rows = plain
    train = rows["train"]
    listed = list(train["image_name"].iloc[[3, 10, 11, 40]]) + list(rows["val"]["image_name"].iloc[:2]) + ["nope.jpg"]
    path = _write(tmp_path / "exclude.csv", listed)
    kept, record = split_rows(cfg.replace(exclude=str(path)), task, ("train", "val"))
    expected = train[~train["image_name"].isin(listed)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept["train"], expected)
    assert len(kept["train"]) == len(train) - train["image_name"].isin(listed).sum() >= len(train) - 4
    pd.testing.assert_frame_equal(kept["val"], rows["val"])  # validation is never touched
    info = record["excluded"]
    assert info["listed"] == 7 and info["rows_removed"] == len(train) - len(expected)
    assert info["not_found"] == 3 and "nope.jpg" in info["not_found_examples"]


def test_in_a_fold_split_only_the_training_folds_lose_rows_and_every_row_keeps_its_fold(plain, tmp_path):
    cfg, task, _ = plain
    fold = cfg.replace(split="fold:0/3")
    rows, record = split_rows(fold, task, ("train", "val"))
    names = list(rows["train"]["image_name"].iloc[:5]) + list(rows["val"]["image_name"].iloc[:5])
    sources = list(rows["train"]["source"].iloc[:5]) + list(rows["val"]["source"].iloc[:5])
    path = _write(tmp_path / "issues.csv", names, source=sources, exclude=[1, 1, 1, 0, "yes"] + [1] * 5)
    kept, kept_record = split_rows(fold.replace(exclude=str(path)), task, ("train", "val"))
    pd.testing.assert_frame_equal(kept["val"], rows["val"])
    assert kept_record["assignment"] == record["assignment"]  # the folds are dealt before the list applies
    key = list(zip(rows["train"]["source"], rows["train"]["image_name"]))
    dropped = {k for k, e in zip(zip(sources, names), [1, 1, 1, 0, 1]) if e}
    expected = rows["train"][[k not in dropped for k in key]].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept["train"], expected)
    assert kept_record["train_rows"] == len(expected) and kept_record["excluded"]["rows_removed"] == 4


def test_a_missing_file_or_one_without_image_name_is_a_clear_error(plain, tmp_path):
    cfg, task, _ = plain
    with pytest.raises(FileNotFoundError, match=r"exclude='no/such/list.csv': no such file; looked in"):
        split_rows(cfg.replace(exclude="no/such/list.csv"), task, ("train", "val"))
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na.jpg,1\n")
    with pytest.raises(ValueError, match=r"bad.csv: no image_name column \(columns: \['name', 'label'\]\)"):
        split_rows(cfg.replace(exclude=str(bad)), task, ("train", "val"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv: not a readable CSV"):
        read_exclusion(empty)


def test_the_notebook_parameter_reaches_the_data_config_and_config_json(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path / "out"))
    path = _write(tmp_path / "list.csv", ["x.jpg"])
    setup = workflow.prepare_training("st2", {"data_root": str(demo_root), "run_name": "excl", "exclude": str(path),
                                              "limit": 40, "device": "cpu"})  # fmt: skip
    assert setup.data.exclude == str(path) and "exclude" in setup.describe()
    assert setup.sections()["data"]["exclude"] == str(path)
    assert DataConfig.from_dict(setup.data.to_dict()) == setup.data
