"""The submission ledger: a row per package, the leaderboard filled in later, no local paths, clear errors."""

from __future__ import annotations

import pytest

from fh_utils.ledger import LedgerError, LedgerRow, append_submission, read_ledger, record_leaderboard


def _row(name: str = "st2-a", **kw) -> LedgerRow:
    return LedgerRow(
        name=name,
        task="st2",
        members="sweep/t0001;sweep/t0003",
        weights="2;1",
        estimate=0.61,
        estimate_low=0.55,
        estimate_high=0.67,
        best_epoch_score=0.68,
        **kw,
    )


def test_rows_are_appended_and_the_leaderboard_score_filled_in_later(tmp_path):
    path = tmp_path / "ledger.csv"
    append_submission(_row("st2-a"), path)
    append_submission(_row("st2-b", commit="abc123"), path)
    frame = read_ledger(path)
    assert list(frame["name"]) == ["st2-a", "st2-b"]
    assert frame["leaderboard"].isna().all()
    assert frame.loc[1, "commit"] == "abc123" and frame.loc[0, "time"] != ""
    assert frame.loc[0, "members"] == "sweep/t0001;sweep/t0003" and frame.loc[0, "weights"] == "2;1"
    record_leaderboard("st2-b", 0.634, path)
    frame = read_ledger(path)
    assert frame["leaderboard"].tolist()[1] == pytest.approx(0.634) and frame["leaderboard"].isna().tolist()[0]
    assert frame.loc[0, "estimate"] == pytest.approx(0.61)


def test_a_repackaged_name_replaces_its_row(tmp_path):
    path = tmp_path / "ledger.csv"
    append_submission(_row("x"), path)
    append_submission(_row("x", rule="last"), path)
    frame = read_ledger(path)
    assert list(frame["name"]) == ["x"] and frame.loc[0, "rule"] == "last"


@pytest.mark.parametrize(
    "field, value",
    [("members", "/home/me/outputs/runs/a"), ("members", "a;/abs/b"), ("name", "C:\\runs\\a"), ("weights", "~/w")],
)
def test_a_row_with_an_absolute_path_is_refused(tmp_path, field, value):
    row = _row()
    setattr(row, field, value)
    with pytest.raises(LedgerError, match="absolute local path"):
        append_submission(row, tmp_path / "ledger.csv")
    assert not (tmp_path / "ledger.csv").exists()


def test_an_unknown_name_or_a_bad_score_names_what_is_wrong(tmp_path):
    path = tmp_path / "ledger.csv"
    with pytest.raises(LedgerError, match="no ledger yet"):
        record_leaderboard("x", 0.5, path)
    append_submission(_row("st2-a"), path)
    with pytest.raises(LedgerError, match="no submission named 'st2-z'; the ledger has st2-a"):
        record_leaderboard("st2-z", 0.5, path)
    with pytest.raises(LedgerError, match="between 0 and 1"):
        record_leaderboard("st2-a", 63.4, path)


def test_the_command_records_a_leaderboard_score_and_names_a_wrong_name(tmp_path, monkeypatch, capsys):
    from fh_utils.__main__ import main

    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path))
    append_submission(_row("st2-a"), tmp_path / "ledger.csv")
    assert main(["ledger", "st2-a", "0.634"]) == 0
    assert read_ledger(tmp_path / "ledger.csv")["leaderboard"].tolist() == [pytest.approx(0.634)]
    assert main(["ledger", "st2-b", "0.5"]) == 2
    assert "no submission named 'st2-b'" in capsys.readouterr().err
