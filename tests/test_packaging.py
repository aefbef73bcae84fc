"""From a run to the leaderboard: the packaged folder predicts, alone, exactly what validation and notebook 05 did.

Each case packages tiny runs, builds the upload zip with the platform client's own ``aifactory.score.make_zip``,
unzips it into a fresh folder, lays out the runs' val rows as ``/aif/Dataset`` and runs ``submit()()`` in a fresh
interpreter (:func:`fh_utils.leaderboard.dry_run.dry_run_submission`). That interpreter cannot import the project
from anywhere but the unzipped ``fh_utils.zip``: its driver removes the editable install's finder and the
checkout from ``sys.path`` and asserts ``importlib.util.find_spec("fh_utils") is None`` before the script runs,
fails if the function imported what the scoring server lacks (scikit-learn, matplotlib, Jupyter, ...), and
reports the file ``fh_utils`` came from, which the test checks lies inside the unzipped archive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from fh_utils.io import read_json, write_json
from fh_utils.leaderboard.client import client_zip_listing
from fh_utils.leaderboard.dry_run import dry_run_submission, layout_test_set
from fh_utils.leaderboard.package import package_submission
from fh_utils.leaderboard.template import notebook_script
from fh_utils.models.factory import RulesError, create_model
from fh_utils.runs import resolve_run_dir, resolve_run_dirs
from fh_utils.workbook import submission

ROWS = 48  # the runs validate on the first 48 val rows (limit), the dry run predicts the same rows


def _train(root: Path, task: str, name: str, **kw) -> Path:
    from fh_utils.workbook import workflow

    params = dict(data_root=str(root), run_name=name, backbone="fh_colornet", img_size=32, epochs=1, batch_size=16,
                  lr=2e-3, scheduler="warmup_cosine", device="cpu", num_workers=0, cache=False, limit=ROWS,
                  color_baseline=False)  # fmt: skip
    run_dir, _ = workflow.train_from_params(task, {**params, **kw}, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(demo_root) -> dict[str, Path]:
    """Two tiny ST2 runs (other sizes, seeds and a non-default crop margin) and one tiny ST1 run."""
    return {"st2": _train(demo_root, "st2", "pkg-st2", crop_margin=0.05),
            "st2b": _train(demo_root, "st2", "pkg-st2b", img_size=40, seed=1),
            "st1": _train(demo_root, "st1", "pkg-st1")}  # fmt: skip


@pytest.fixture(scope="module")
def test_set(demo_root, tmp_path_factory) -> Path:
    """The demo val split's first rows laid out as /aif/Dataset (test CSVs of both tasks, test/ images)."""
    return layout_test_set(demo_root, tmp_path_factory.mktemp("aif") / "Dataset", limit=ROWS)


def _client_zip(folder: Path, tmp_path: Path) -> Path:
    """The upload archive exactly as the platform client builds it: aifactory.score.make_zip in the folder."""
    import aifactory.score as aif

    work = tmp_path / "client"
    shutil.copytree(folder, work)
    old = os.getcwd()
    os.chdir(work)
    try:
        aif.make_zip("task")  # builds ./aif.zip; the upload (aif.submit) is never called
    finally:
        os.chdir(old)
    return work / "aif.zip"


CASES = {
    "st2-run": (["st2"], "st2"),
    "st2-ensemble": (["st2", "st2b"], "st2"),
    "st1-run": (["st1"], "st1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_uploaded_zip_predicts_alone_what_notebook_05_predicts(case, runs, test_set, tmp_path):
    names, task = CASES[case]
    run_dir = ",".join(str(runs[n]) for n in names)
    package = package_submission(run_dir, out_dir=tmp_path / "submission", model_name=case)
    assert package.task.name == task and package.spec["tta"] == "none"

    upload = _client_zip(package.folder, tmp_path)
    with zipfile.ZipFile(upload) as archive:
        listed = sorted(archive.namelist())
        assert listed == package.files, "the client's zip differs from the listing the packager checked"
        assert {"task.ipynb", "fh_utils.zip", "model/submission.json"} <= set(listed)
        assert not [n for n in listed if n.endswith(("last.pt", ".csv", ".jpg", ".png"))], listed
        unzipped = tmp_path / "unzipped"
        archive.extractall(unzipped)
    with zipfile.ZipFile(unzipped / "fh_utils.zip") as code:
        shipped = code.namelist()
    assert "fh_utils/inference/predictor.py" in shipped and "fh_utils/training/tta.py" in shipped
    assert not [n for n in shipped if n.startswith("fh_utils/workbook/")]

    dry = dry_run_submission(unzipped, test_set)
    assert Path(dry.fh_utils_file).resolve().is_relative_to((unzipped / "fh_utils.zip").resolve()), dry.fh_utils_file
    assert not {"sklearn", "matplotlib", "IPython", "optuna"} & set(dry.modules)

    csv = test_set / package.task.csv_name("test")
    setup = submission.prepare_submission(run_dir, test_csv=str(csv), images_dir=str(test_set / "test"),
                                          ensemble_name=f"nb05-{case}")  # fmt: skip
    expected = submission.predict_submission(setup, progress=False)
    pd.testing.assert_frame_equal(dry.predictions, expected.submission, check_dtype=False)
    assert list(dry.predictions.columns) == package.task.submission_columns
    assert len(dry.predictions) == ROWS
    nb05 = submission.finish_submission(setup, expected)["score"]
    assert dry.score == nb05
    if len(names) == 1:  # one run: exactly the score its validation recorded
        assert dry.score == read_json(runs[names[0]] / "metrics.json")["score"] == package.spec["validated_score"]
    else:
        assert package.spec["kind"] == "ensemble" and len(package.spec["members"]) == 2


def test_the_notebook_itself_dry_runs_with_an_empty_key_and_has_the_template_shape(runs, test_set, tmp_path):
    """``python task.py`` (the script nbconvert makes, run as the main program) with KEY empty: a checked dry run."""
    package = package_submission(str(runs["st2"]), out_dir=tmp_path / "sub", key="")
    script = notebook_script(package.folder / "task.ipynb")
    for needle in ("def etri_task2_submit():", "parse_known_args()", "def submit():\n    return etri_task2_submit",
                   "import aifactory.score as aif", 'aif.submit(model_name=MODEL_NAME, key=KEY, func=submit)',
                   'if __name__ == "__main__":'):  # fmt: skip
        assert needle in script, needle
    (tmp_path / "task.py").write_text(script)
    env = {**os.environ, "FH_AIF_DATASET": str(test_set)}
    proc = subprocess.run([sys.executable, str(tmp_path / "task.py")], cwd=package.folder, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    score = read_json(runs["st2"] / "metrics.json")["score"]
    assert f"returned {ROWS} rows" in proc.stdout and "row order OK" in proc.stdout
    assert f"score (acsa): {score:.4f}" in proc.stdout, proc.stdout
    assert "nothing is uploaded" in proc.stdout


def test_a_broken_frame_is_refused_by_the_dry_run_check(test_set):
    from fh_utils.inference.aif import SubmissionCheckError, check_frame

    csv = test_set / "Fashion-How24_sub2_test.csv"
    rows = pd.read_csv(csv)
    good = pd.DataFrame({"image_name": rows["image_name"], "color": 0})
    check_frame(good, csv, "st2")
    with pytest.raises(SubmissionCheckError, match="out of the CSV's order"):
        check_frame(good.iloc[::-1].reset_index(drop=True), csv, "st2")
    with pytest.raises(SubmissionCheckError, match="47 rows for the 48"):
        check_frame(good.iloc[1:], csv, "st2")
    with pytest.raises(SubmissionCheckError, match="outside 0..17"):
        check_frame(good.assign(color=18), csv, "st2")
    with pytest.raises(SubmissionCheckError, match="dtype float64"):
        check_frame(good.assign(color=0.0), csv, "st2")
    with pytest.raises(SubmissionCheckError, match="columns"):
        check_frame(good.rename(columns={"color": "Color"}), csv, "st2")


def _fake_run(folder: Path, task: str, backbone: str = "fh_colornet") -> Path:
    model = create_model(task, backbone, img_size=32, size_budget=False, check_size=False)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, folder / "best.pt")
    write_json(folder / "config.json", {"task": {"name": task}})
    return folder


def test_refusals_name_the_problem_and_write_nothing(tmp_path):
    out = tmp_path / "subs" / "x"
    st1 = [_fake_run(tmp_path / "a", "st1"), _fake_run(tmp_path / "b", "st1")]
    with pytest.raises(RulesError, match="forbid ensembles"):
        package_submission(f"{st1[0]},{st1[1]}", out_dir=out)
    big = [_fake_run(tmp_path / f"big{i}", "st2", "mobilenetv4_conv_small") for i in range(3)]
    with pytest.raises(RulesError, match=r"sum to 3\d\.\d\d MB .* over the 25 MB budget"):
        package_submission(",".join(map(str, big)), out_dir=out)
    empty = tmp_path / "no-best"
    empty.mkdir()
    write_json(empty / "config.json", {"task": {"name": "st2"}})
    with pytest.raises(FileNotFoundError, match="best.pt"):
        package_submission(str(empty), out_dir=out)
    with pytest.raises(ValueError, match="zip would leave out .*trained"):
        package_submission(str(big[0]), out_dir=out, model_dir="trained")
    assert not (tmp_path / "subs").exists() or not any((tmp_path / "subs").iterdir()), "a refusal wrote files"


def test_the_client_rule_is_the_clients(tmp_path):
    """client_keeps agrees with aifactory's own make_zip on names that contain and avoid its words."""
    for rel in ("task.ipynb", "model/best.pt", "model/trained/w.pt", "drive/x", "a/sample_data/b", "retrain.txt",
                "deep/strain/x.py", "aif.zip", "model/old_aif.zip.bak"):  # fmt: skip
        (tmp_path / "f" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "f" / rel).write_text("x")
    with zipfile.ZipFile(_client_zip(tmp_path / "f", tmp_path)) as archive:
        theirs = sorted(archive.namelist())
    ours, dropped = client_zip_listing(tmp_path / "f")
    assert ours == theirs == ["model/best.pt", "retrain.txt", "task.ipynb"]
    assert "model/trained/w.pt" in dropped and "deep/strain/x.py" in dropped


def test_run_paths_typed_from_the_repository_root_work_from_notebooks(tmp_path, monkeypatch):
    """A notebook's kernel runs in notebooks/: ``-p run_dir outputs/runs/<run>`` typed at the root still resolves
    (notebook 05, 07, the teacher of 03/04, a top_k.json), and a miss lists every place looked at."""
    from fh_utils.workbook import workflow

    proj = tmp_path / "proj"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "pyproject.toml").write_text('[project]\nname = "fh-utils"\n')
    run = _fake_run(proj / "outputs" / "runs" / "r1", "st2")
    write_json(proj / "outputs" / "top_k.json", {"runs": ["runs/r1"]})
    monkeypatch.chdir(proj / "notebooks")
    assert resolve_run_dir("outputs/runs/r1") == run.resolve()
    assert workflow.resolve_teacher("outputs/runs/r1") == [str(run.resolve())]
    assert resolve_run_dirs("outputs/top_k.json") == [run.resolve()]
    assert resolve_run_dir(str(run)) == run.resolve()  # absolute
    assert resolve_run_dir("../outputs/runs/r1") == run.resolve()  # relative to the working directory
    with pytest.raises(FileNotFoundError, match=r"looked in .*notebooks/outputs/runs/nope, .*proj/outputs/runs/nope"):
        resolve_run_dir("outputs/runs/nope")


def test_the_command_line_packages_a_run(runs, tmp_path, capsys):
    from fh_utils.__main__ import main

    argv = ["package", str(runs["st1"]), "--out", str(tmp_path / "cli"), "--model-name", "cli", "--no-dry-run"]
    assert main(argv) == 0
    spec = read_json(tmp_path / "cli" / "model" / "submission.json")
    assert spec["task"] == "st1" and spec["model_name"] == "cli" and spec["kind"] == "run"
    assert "upload     fh_utils.zip, model/best.pt, model/config.json, model/submission.json, task.ipynb" in (
        capsys.readouterr().out
    )


def test_the_spec_and_the_ledger_name_runs_never_local_paths_and_carry_the_honest_estimate(runs, tmp_path):
    from fh_utils.ledger import read_ledger

    package = package_submission(runs["st2"], out_dir=tmp_path / "sub", name="ledger-st2")
    text = (package.folder / "model" / "submission.json").read_text()
    assert str(runs["st2"]) not in text and str(tmp_path) not in text, "no absolute local path in the upload"
    spec = json.loads(text)
    assert spec["source"] == ["pkg-st2"] and [m["run"] for m in spec["members"]] == ["pkg-st2"]
    metrics = read_json(runs["st2"] / "metrics.json")
    assert spec["estimate"] == metrics["estimates"]["estimate"] and spec["estimate"]["rule"] == "best"
    row = read_ledger().set_index("name").loc["ledger-st2"]
    assert row["members"] == "pkg-st2" and row["estimate"] == pytest.approx(spec["estimate"]["score"])
    assert row["best_epoch_score"] == pytest.approx(spec["validated_score"]) and pd.isna(row["leaderboard"])


def test_the_packaged_function_predicts_with_the_tta_mode_its_spec_records(test_set, tmp_path, monkeypatch):
    """predict_test_set serves what ``Predictor(tta=spec["tta"])`` predicts, on a model its mirror image fools."""
    import numpy as np

    from fh_utils.inference.aif import predict_test_set
    from fh_utils.inference.predictor import Predictor

    with torch.random.fork_rng():
        torch.manual_seed(1)
        run = _fake_run(tmp_path / "asym", "st2")
    state = torch.load(run / "best.pt", weights_only=True)
    g = torch.Generator().manual_seed(1)  # weights perturbed, BatchNorm statistics kept: far from mirror-symmetric
    for key in [k for k in state["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]:
        state["model"][key] = state["model"][key] + 0.1 * torch.randn(state["model"][key].shape, generator=g)
    torch.save(state, run / "best.pt")
    package = package_submission(str(run), out_dir=tmp_path / "sub", tta="hflip")
    assert read_json(package.folder / "model" / "submission.json")["tta"] == "hflip"

    csv, images = test_set / "Fashion-How24_sub2_test.csv", test_set / "test"
    hflip = Predictor.load(run, tta="hflip").predict_csv(csv, images)
    plain = Predictor.load(run, tta="none").predict_csv(csv, images)
    gap = float(np.abs(hflip.probabilities["Color"] - plain.probabilities["Color"]).max())
    differ = int((hflip.frame["color"] != plain.frame["color"]).sum())
    assert gap > 0.05 and differ >= 3, f"the model is almost mirror-symmetric (gap {gap}, {differ} rows differ)"

    served, predict_csv = [], Predictor.predict_csv

    def spy(self, *args, **kwargs):  # what the packaged function predicted, probabilities included
        served.append(predict_csv(self, *args, **kwargs))
        return served[-1]

    monkeypatch.setattr(Predictor, "predict_csv", spy)
    frame = predict_test_set(package.folder / "model", test_set)
    assert len(served) == 1 and served[0].frame is frame
    assert np.array_equal(served[0].probabilities["Color"], hflip.probabilities["Color"])
    pd.testing.assert_frame_equal(frame, hflip.frame)


def test_the_test_data_folder_is_the_argument_then_the_environment_then_the_servers(tmp_path, monkeypatch):
    from fh_utils.inference.aif import DATASET_ENV, dataset_dir

    monkeypatch.delenv(DATASET_ENV, raising=False)
    assert dataset_dir() == Path("/aif/Dataset")
    monkeypatch.setenv(DATASET_ENV, str(tmp_path / "env"))
    assert dataset_dir() == tmp_path / "env"
    assert dataset_dir(tmp_path / "given") == tmp_path / "given"


def test_the_spec_records_the_validated_score_of_the_tta_mode_packaged_only(tmp_path):
    run = _fake_run(tmp_path / "r", "st2")
    write_json(run / "metrics.json", {"score": 0.5, "tta": "hflip+crops", "tta_score": 0.6})
    recorded = {tta: package_submission(str(run), out_dir=tmp_path / tta, tta=tta).spec["validated_score"]
                for tta in ("none", "hflip", "hflip+crops")}  # fmt: skip
    assert recorded == {"none": 0.5, "hflip": None, "hflip+crops": 0.6}
    assert package_submission(str(run), out_dir=tmp_path / "default").spec["tta"] == "hflip+crops"
