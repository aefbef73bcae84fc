"""The dry run of ``python -m fh_utils package``: on the data the run trained on, only its task, clear data errors.

A run trained with ``-p data_root /somewhere`` dry-runs on ``/somewhere`` with no data root given (its
``config.json`` says so; the upload never holds that local path); an explicit data root wins; only the package's
task is laid out, so a data folder holding the ST2 CSVs alone dry-runs an ST2 package; the CSVs go through the
validated reader, so a missing or malformed one is a ``DataValidationError`` naming the file (and line), raised
after the folder is written and leaving it whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fh_utils.data.reader import DataValidationError
from fh_utils.io import read_json, write_json
from fh_utils.leaderboard.dry_run import DRY_RUN_SETUP_ERRORS, DataRootError, dry_run_data_root, dry_run_on_split
from fh_utils.leaderboard.package import dry_run_report, package_submission, training_data_roots

ROWS = 48  # the run validates on the first 48 val rows; the dry runs predict the same rows
ST2_CSVS = ("Fashion-How24_sub2_train.csv", "Fashion-How24_sub2_val.csv")


def _data_folder(demo_root: Path, dest: Path, csvs: tuple[str, ...] | None = None) -> Path:
    """A data root at ``dest``: the demo's CSVs (``csvs``, or all) copied, its image folders linked."""
    dest.mkdir(parents=True)
    for csv in sorted(demo_root.glob("Fashion-How24_sub*_*.csv")):
        if csvs is None or csv.name in csvs:
            shutil.copyfile(csv, dest / csv.name)
    for split in ("train", "val"):
        (dest / split).symlink_to((demo_root / split).resolve(), target_is_directory=True)
    return dest


@pytest.fixture(scope="module")
def elsewhere(demo_root, tmp_path_factory) -> Path:
    """The demo data copied to a temp folder that is not the default data root."""
    return _data_folder(demo_root, tmp_path_factory.mktemp("elsewhere") / "my-data")


@pytest.fixture(scope="module")
def st2_run(elsewhere) -> Path:
    """A tiny ST2 run trained with ``data_root`` = :func:`elsewhere`."""
    from fh_utils.workbook import workflow

    params = dict(data_root=str(elsewhere), run_name="dr-st2", backbone="fh_colornet", img_size=32, epochs=1,
                  batch_size=16, lr=2e-3, device="cpu", num_workers=0, cache=False, limit=ROWS,
                  color_baseline=False)  # fmt: skip
    run_dir, _ = workflow.train_from_params("st2", params, progress=False)
    return run_dir


@pytest.fixture
def no_default_data(tmp_path, monkeypatch) -> Path:
    """The default data root (``$FH_DATA``) points at a folder that does not exist."""
    missing = tmp_path / "no-default-data"
    monkeypatch.setenv("FH_DATA", str(missing))
    return missing


def test_a_run_trained_elsewhere_dry_runs_on_its_data_root_by_default(st2_run, elsewhere, no_default_data, tmp_path):
    package = package_submission(str(st2_run), out_dir=tmp_path / "sub")
    assert package.data_roots == {str(elsewhere.resolve()): [str(st2_run)]}
    for name in ("model/submission.json", "model/config.json", "task.ipynb"):  # the upload names no data root
        assert "my-data" not in (package.folder / name).read_text(), name

    dry = dry_run_on_split(package, limit=ROWS)
    score = read_json(st2_run / "metrics.json")["score"]
    assert dry.score == score == package.spec["validated_score"]
    assert sorted(p.name for p in dry.dataset.glob("*.csv")) == ["Fashion-How24_sub2_test.csv"]  # its task only
    report = read_json(dry_run_report(package.folder))
    assert report["data_root"] == str(elsewhere.resolve()) and report["score"] == score
    assert sorted(p.name for p in package.folder.iterdir()) == ["fh_utils.zip", "model", "task.ipynb"]

    # The folder given by path: its runs (submission.json's source) still say where they trained.
    assert dry_run_data_root(package.folder)[0] == elsewhere.resolve()


def test_an_explicit_data_root_wins_and_st2_csvs_alone_dry_run_an_st2_package(st2_run, demo_root, tmp_path):
    st2_only = _data_folder(demo_root, tmp_path / "st2-only", ST2_CSVS)
    package = package_submission(str(st2_run), out_dir=tmp_path / "sub")
    dry = dry_run_on_split(package, data_root=st2_only, limit=ROWS)
    assert dry.score == read_json(st2_run / "metrics.json")["score"]
    assert read_json(dry_run_report(package.folder))["data_root"] == str(st2_only.resolve())
    assert dry.rows == ROWS


def _broken(demo_root: Path, folder: Path, case: str) -> tuple[Path, str]:
    """A data folder with the ST2 val CSV missing or malformed; the CSV and the error expected."""
    csv_name = "Fashion-How24_sub2_val.csv"
    if case == "missing":
        root = _data_folder(demo_root, folder, ("Fashion-How24_sub1_train.csv", "Fashion-How24_sub1_val.csv"))
        return root / csv_name, "CSV not found"
    root = _data_folder(demo_root, folder)
    lines = (root / csv_name).read_text().splitlines()
    if case == "no-image_name":
        lines[0] = lines[0].replace("image_name", "img")
        expected = "missing column 'image_name'"
    else:  # a label that is not an integer on CSV line 3
        header = lines[0].split(",")
        cells = lines[2].split(",")
        cells[header.index("Color")] = "red"
        lines[2] = ",".join(cells)
        expected = ":3: Color must be an integer class id, got 'red'"
    (root / csv_name).write_text("\n".join(lines) + "\n")
    return root / csv_name, expected


@pytest.mark.parametrize("case", ["missing", "no-image_name", "label-not-int"])
def test_a_missing_or_malformed_csv_names_the_file_and_leaves_the_package(case, st2_run, demo_root, tmp_path):
    csv, expected = _broken(demo_root, tmp_path / "data", case)
    package = package_submission(str(st2_run), out_dir=tmp_path / "sub")
    with pytest.raises(DataValidationError) as err:
        dry_run_on_split(package, data_root=csv.parent, limit=ROWS)
    assert isinstance(err.value, DRY_RUN_SETUP_ERRORS)
    assert str(csv) in str(err.value) and expected in str(err.value), str(err.value)
    assert sorted(p.as_posix() for p in package.folder.rglob("*") if p.is_file()) == sorted(
        (package.folder / f).as_posix() for f in package.files)  # fmt: skip
    assert not dry_run_report(package.folder).exists()


def _fake_run(folder: Path, data_root: Path | None) -> Path:
    """A packageable ST2 run (untrained weights) whose config.json records ``data_root``."""
    import torch

    from fh_utils.models.factory import create_model

    model = create_model("st2", "fh_colornet", img_size=32, size_budget=False, check_size=False)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, folder / "best.pt")
    data = {"data_root": str(data_root)} if data_root is not None else {}
    write_json(folder / "config.json", {"task": {"name": "st2"}, "data": data})
    return folder


def test_runs_on_different_data_roots_need_one_given(demo_root, no_default_data, tmp_path):
    a, b = tmp_path / "data-a", tmp_path / "data-b"
    runs = [_fake_run(tmp_path / "ra", a), _fake_run(tmp_path / "rb", b)]
    package = package_submission(f"{runs[0]},{runs[1]}", out_dir=tmp_path / "sub")
    assert package.data_roots == {str(a): [str(runs[0])], str(b): [str(runs[1])]}
    with pytest.raises(DataRootError, match=r"2 data roots:\n  .*data-a: ra\n  .*data-b: rb\npass data_root"):
        dry_run_on_split(package)
    assert dry_run_data_root(package, demo_root)[0] == demo_root.resolve()  # given: it wins

    # A saved ensemble of them names its members' runs in manifest.json.
    from fh_utils.models.ensemble import build_ensemble, save_ensemble

    save_ensemble(build_ensemble(runs, None, enforce_rules=False, size_budget=False), tmp_path / "ens")
    assert training_data_roots([tmp_path / "ens"]) == package.data_roots

    # Members agreeing on a data root that has since gone: the error names it and the runs.
    same = [_fake_run(tmp_path / "rc", a), _fake_run(tmp_path / "rd", a)]
    package = package_submission(f"{same[0]},{same[1]}", out_dir=tmp_path / "sub2")
    with pytest.raises(DataValidationError, match=r"data-a: data root does not exist \(the one rc, rd trained on"):
        dry_run_on_split(package)
    assert (package.folder / "task.ipynb").is_file()

    # No run records a data root: the default one, as before.
    none = _fake_run(tmp_path / "re", None)
    package = package_submission(str(none), out_dir=tmp_path / "sub3")
    assert package.data_roots == {} and dry_run_data_root(package)[0] == no_default_data.resolve()


def test_the_command_line_reports_a_data_error_without_a_traceback(st2_run, demo_root, tmp_path, capsys):
    from fh_utils.__main__ import main

    csv, expected = _broken(demo_root, tmp_path / "data", "missing")
    out = tmp_path / "cli"
    assert main(["package", str(st2_run), "--out", str(out), "--data-root", str(csv.parent)]) == 2
    captured = capsys.readouterr()
    assert str(csv) in captured.err and expected in captured.err and "Traceback" not in captured.err
    assert (out / "task.ipynb").is_file() and (out / "model" / "submission.json").is_file()
