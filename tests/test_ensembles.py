"""ST2 ensembles: built from run folders, saved as one file with a manifest, size = sum, ST1 refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fh_utils.inference.predictor import load_members
from fh_utils.io import read_json, write_json
from fh_utils.models.ensemble import Member, build_ensemble, check_budget, load_ensemble
from fh_utils.models.factory import RulesError, create_model
from fh_utils.runs import resolve_run_dirs
from fh_utils.tasks import get_task
from fh_utils.workbook import submission


def _train(root: Path, name: str, **kw) -> Path:
    from fh_utils.workbook import workflow

    params = dict(data_root=str(root), run_name=name, backbone="fh_colornet", img_size=32, epochs=1, batch_size=16,
                  lr=2e-3, scheduler="warmup_cosine", device="cpu", num_workers=0, cache=False, limit=48,
                  color_baseline=False)  # fmt: skip
    run_dir, _ = workflow.train_from_params("st2", {**params, **kw}, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def two_runs(demo_root) -> list[Path]:
    """Two tiny ST2 runs that differ in input size and seed (so the ensemble feeds two kinds of crops)."""
    return [_train(demo_root, "ens-a"), _train(demo_root, "ens-b", img_size=40, seed=1, crop_margin=0.05)]


def _fake_st1_run(folder: Path) -> Path:
    model = create_model("st1", "fh_colornet", img_size=32)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, folder / "best.pt")
    write_json(folder / "config.json", {"task": {"name": "st1"}})
    return folder


def test_an_st2_ensemble_of_two_runs_predicts_and_is_saved_with_its_manifest(two_runs, demo_root):
    setup = submission.prepare_submission(",".join(map(str, two_runs)), data_root=str(demo_root), threads=1,
                                          ensemble_name="ens-ab")  # fmt: skip
    assert setup.run_dir.name == "ens-ab" and setup.model_path.name == "ensemble.pt" and setup.members == two_runs
    manifest = read_json(setup.run_dir / "manifest.json")
    assert [m["run"] for m in manifest["members"]] == [str(r) for r in two_runs]
    assert [m["img_size"] for m in manifest["members"]] == [32, 40]
    result = submission.predict_submission(setup, batch_size=16, progress=False)
    metrics = submission.finish_submission(setup, result)
    sizes = [submission.size_report(load_members(r / "best.pt")[0].model, result.task)["size_mb"]
             for r in two_runs]  # fmt: skip
    assert metrics["members"] == 2 and metrics["size_mb"] == pytest.approx(sum(sizes), abs=2e-3)
    assert manifest["size_mb"] == pytest.approx(sum(sizes), abs=2e-3)
    assert metrics["within_budget"] and len(result.submission) == metrics["rows"] > 0
    # The prediction is the mean of the members' probabilities, and each member scores as its run did.
    mean = (result.member_probabilities[0]["Color"] + result.member_probabilities[1]["Color"]) / 2
    assert np.allclose(result.probabilities["Color"], mean)
    assert np.array_equal(result.submission["color"].to_numpy(), mean.argmax(1))
    scores = submission.member_scores(result)
    assert list(scores["member"]) == ["ens-a", "ens-b", "ensemble"]
    assert scores["score"].iloc[-1] == metrics["score"]
    assert (setup.run_dir / "submission.csv").is_file()
    # The saved folder is loadable alone and predicts the same.
    again = submission.prepare_submission(str(setup.run_dir), data_root=str(demo_root), threads=1)
    res2 = submission.predict_submission(again, batch_size=16, progress=False)
    assert np.allclose(res2.probabilities["Color"], result.probabilities["Color"], atol=1e-6)


def test_weights_and_a_top_k_json(two_runs, demo_root, tmp_path):
    top_k = tmp_path / "top_k.json"
    write_json(top_k, {"runs": [str(r) for r in two_runs]})
    setup = submission.prepare_submission(str(top_k), data_root=str(demo_root), threads=1, weights="3,1",
                                          ensemble_name="ens-topk")  # fmt: skip
    assert [m.weight for m in load_ensemble(setup.model_path)] == [3.0, 1.0]
    res = submission.predict_submission(setup, batch_size=32, progress=False)
    p = res.member_probabilities
    assert np.allclose(res.probabilities["Color"], 0.75 * p[0]["Color"] + 0.25 * p[1]["Color"])
    write_json(top_k, [{"run_dir": str(r)} for r in two_runs])
    assert resolve_run_dirs(str(top_k)) == two_runs
    with pytest.raises(ValueError, match="weights"):
        submission.prepare_submission(str(top_k), data_root=str(demo_root), weights="1")


def test_an_st1_ensemble_is_refused_unless_rules_are_off(tmp_path):
    runs = [_fake_st1_run(tmp_path / "r1"), _fake_st1_run(tmp_path / "r2")]
    with pytest.raises(RulesError, match="forbid ensembles"):
        build_ensemble(runs)
    with pytest.raises(RulesError, match="enforce_rules=False"):
        submission.prepare_submission(f"{runs[0]},{runs[1]}", test_csv=str(tmp_path / "x.csv"))
    assert len(build_ensemble(runs, enforce_rules=False)) == 2
    assert len(build_ensemble(runs[:1])) == 1  # one model is no ensemble


def test_members_over_the_budget_are_refused():
    task = get_task("st2")
    model = torch.nn.Linear(1, 1)
    members = [Member(model, size_mb=10.0, name="a"), Member(model, size_mb=16.0, name="b")]
    with pytest.raises(RulesError, match="26.00 MB"):
        check_budget(members, task)
    assert check_budget(members, task, size_budget=False) == 26.0
    assert check_budget(members[:1], task) == 10.0
