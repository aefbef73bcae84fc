"""The checkpoint a run submits is chosen by a named rule (best, last, avg, crt), and one road loads it everywhere.

A tiny ST2 run per rule (fh_colornet at 32 px, 3 epochs of 2 steps): ``final.pt`` holds the last epoch's weights,
``averaged.pt`` the mean of the kept epochs' weights, ``metrics.json`` records the rule, and notebook 05's set-up,
the package and the final evaluation of notebooks 03/04 all take the rule's file through
:func:`fh_utils.inference.loading.load_for_prediction`.
"""

from __future__ import annotations

import pytest
import torch

from fh_utils.data.datasets import create_loaders
from fh_utils.inference.loading import load_for_prediction
from fh_utils.io import read_json, write_json
from fh_utils.models.factory import create_model
from fh_utils.paths import runs_dir
from fh_utils.runs import CONFIG_FILE, model_file, resolve_run_dir
from fh_utils.scoring.estimates import EstimateSettings
from fh_utils.scoring.report import run_estimates
from fh_utils.tasks import ST2
from fh_utils.training.averaging import average_state_dicts
from fh_utils.training.config import TrainConfig
from fh_utils.training.engine import fit, seed_everything
from fh_utils.workbook.submission import prepare_submission

FAST = EstimateSettings(folds=2, repeats=1, bootstrap=10)


@pytest.fixture(scope="module")
def runs(demo_root):
    loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=32)
    loaders["val"] = create_loaders(demo_root, "st2", img_size=32, batch_size=32, limit=40, splits=("val",))["val"]
    out = {}
    for rule in ("last", "avg"):
        seed_everything(0)
        model = create_model("st2", "fh_colornet", img_size=32)
        run = runs_dir() / "rules" / f"run-{rule}"  # under outputs/runs: an ensemble choice names runs, not paths
        crt = 1 if rule == "avg" else 0  # the avg run also re-trains its classifier from averaged.pt: crt.pt
        fit(model, loaders, run, dict(epochs=3, lr=3e-3, seed=0, device="cpu", threads=1, keep_epochs=2,
                                      checkpoint=rule, crt_epochs=crt), progress=False)  # fmt: skip
        out[rule] = run
    return out


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_the_last_rule_saves_the_last_epoch_and_every_reader_takes_it(runs):
    run = runs["last"]
    assert model_file(run).name == "final.pt" and model_file(run, "best").name == "best.pt"
    final, epoch3 = _weights(run / "final.pt"), _weights(run / "checkpoints" / "epoch_003.pt")
    assert all(torch.equal(final[k], epoch3[k]) for k in final), "final.pt is the last epoch's weights"
    metrics = read_json(run / "metrics.json")
    history = [r for r in (run / "history.csv").read_text().splitlines()[1:]]
    assert metrics["checkpoint"]["rule"] == "last" and metrics["checkpoint"]["epoch"] == 3 == len(history)
    loaded = load_for_prediction(str(run))
    assert loaded.model_path.name == "final.pt" and loaded.rule == "last" and loaded.kind == "run"
    assert loaded.members[0].score == metrics["checkpoint"]["score"], "the member's score is its checkpoint's"
    assert load_for_prediction(str(run), checkpoint="best").model_path.name == "best.pt"
    setup = prepare_submission(str(run), test_csv=str(run / "none.csv"), images_dir=str(run))
    assert setup.model_path.name == "final.pt"
    member = loaded.members[0].model.state_dict()
    assert all(torch.equal(member[k], final[k]) for k in final)


def test_the_avg_rule_saves_the_mean_of_the_kept_epochs_and_its_own_estimate(runs):
    run = runs["avg"]
    averaged = torch.load(run / "averaged.pt", map_location="cpu", weights_only=True)
    assert averaged["averaged_epochs"] == [2, 3]
    e2, e3 = _weights(run / "checkpoints" / "epoch_002.pt"), _weights(run / "checkpoints" / "epoch_003.pt")
    params = dict(create_model("st2", "fh_colornet", img_size=32).named_parameters())
    for name in params:  # parameters are the mean; batch-norm buffers were re-estimated on the training data
        assert torch.allclose(averaged["model"][name], (e2[name].double() + e3[name].double()).div(2).float())
    buffers = [k for k in averaged["model"] if k.endswith("running_mean")]
    assert buffers and any(not torch.allclose(averaged["model"][k], (e2[k] + e3[k]) / 2) for k in buffers)
    metrics = read_json(run / "metrics.json")
    assert metrics["checkpoint"]["rule"] == "avg" and metrics["checkpoint"]["batchnorm_recomputed"] is True
    assert (run / "val_avg.npz").exists() and model_file(run).name == "averaged.pt"
    est = run_estimates(run, ST2, settings=FAST)
    assert est["estimate"]["rule"] == "avg"
    assert est["estimate"]["score"] == pytest.approx(metrics["checkpoint"]["score"], abs=1e-6)
    assert est["estimate"]["score"] != est["last_epoch"]["score"] or e2 != e3


def test_crt_is_submitted_when_asked_for_and_estimated_from_its_own_predictions(runs, tmp_path):
    from fh_utils.leaderboard.package import package_submission

    run = runs["avg"]
    metrics = read_json(run / "metrics.json")
    assert metrics["crt"]["source"] == "averaged.pt" and metrics["crt"]["score"] is not None
    assert model_file(run).name == "averaged.pt", "a run submits its training rule's checkpoint unless asked"
    assert model_file(run, "crt").name == "crt.pt" and model_file(runs["last"], "crt") is None
    loaded = load_for_prediction(str(run), checkpoint="crt")
    assert loaded.model_path.name == "crt.pt" and loaded.rule == "crt"
    assert loaded.members[0].score == metrics["crt"]["score"], "the member's score is cRT's, not the avg's"
    crt, member = _weights(run / "crt.pt"), loaded.members[0].model.state_dict()
    assert all(torch.equal(member[k], crt[k]) for k in crt)
    est = run_estimates(run, ST2, "crt", settings=FAST)
    assert est["estimate"]["rule"] == "crt"
    assert est["estimate"]["score"] == pytest.approx(metrics["crt"]["score"], abs=1e-6)
    package = package_submission(str(run), out_dir=tmp_path / "sub", name="crt", checkpoint="crt")
    spec = package.spec
    assert spec["checkpoint"] == "crt" and spec["validated_score"] == metrics["crt"]["score"]
    assert spec["estimate"]["rule"] == "crt" and spec["members"][0]["score"] == metrics["crt"]["score"]
    packed = torch.load(tmp_path / "sub" / "model" / spec["model_file"].split("/")[-1], weights_only=True)["model"]
    assert all(torch.equal(packed[k], crt[k]) for k in crt), "the package holds crt.pt's weights"
    from fh_utils.inference.predictor import Predictor

    served = Predictor.load(tmp_path / "sub" / "model" / spec["model_file"]).members[0].model.state_dict()
    assert all(torch.equal(served[k], crt[k]) for k in crt), "task.ipynb's loading serves cRT"
    with pytest.raises(FileNotFoundError, match="crt_epochs > 0"):
        load_for_prediction(str(runs["last"]), checkpoint="crt")
    with pytest.raises(ValueError, match="'crt' is chosen when submitting"):
        TrainConfig(checkpoint="crt", crt_epochs=2)


def test_average_state_dicts_is_the_exact_mean_and_refuses_other_shapes(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    for name, state in (("a", a), ("b", b)):
        torch.save({"model": state}, tmp_path / f"{name}.pt")
    mean = average_state_dicts([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and mean["n"].item() == 5
    torch.save({"model": {"w": torch.zeros(3), "n": torch.tensor(1)}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="c.pt does not hold the same weights"):
        average_state_dicts([tmp_path / "a.pt", tmp_path / "c.pt"])


def test_a_rule_is_checked_and_a_missing_rule_file_is_never_replaced(runs, tmp_path):
    with pytest.raises(ValueError, match="checkpoint rule must be one of"):
        TrainConfig(checkpoint="newest")
    with pytest.raises(ValueError, match="keep_epochs must be at least 1"):
        TrainConfig(checkpoint="avg", keep_epochs=0)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "best.pt").write_bytes((runs["last"] / "best.pt").read_bytes())
    write_json(unfinished / CONFIG_FILE, {"train": {"checkpoint": "last"}})
    assert model_file(unfinished) is None, "no final.pt yet: best.pt must not stand in for it"
    with pytest.raises(FileNotFoundError, match=r"saves its 'last' checkpoint, final\.pt, when its training ends"):
        resolve_run_dir(str(unfinished))
    assert resolve_run_dir(str(unfinished), rule="best") == unfinished.resolve()
    with pytest.raises(FileNotFoundError, match="no 'avg' checkpoint|averaged.pt"):
        load_for_prediction(f"{runs['last']},{runs['avg']}", checkpoint="avg")


def test_one_road_checks_the_task_the_rules_and_the_weights(runs):
    both = f"{runs['last']},{runs['avg']}"
    loaded = load_for_prediction(both, weights="3,1", checkpoint="last")
    assert loaded.kind == "runs" and [m.weight for m in loaded.members] == [3.0, 1.0]
    with pytest.raises(ValueError, match="1 weights for 2 runs"):
        load_for_prediction(both, weights="1")
    with pytest.raises(ValueError, match="task='st1' but"):
        load_for_prediction(str(runs["last"]), task="st1")


def test_the_ensemble_choice_is_made_on_stored_predictions_and_packaged_with_its_estimate(runs, tmp_path):
    from fh_utils.leaderboard.package import package_submission
    from fh_utils.ledger import read_ledger
    from fh_utils.workbook.ensemble_choice import choose_ensemble, write_ensemble_choice

    both = f"{runs['last']},{runs['avg']}"
    choice, candidates, task = choose_ensemble(both, folds=2, repeats=1, bootstrap=10)
    assert task.name == "st2" and [c.rule for c in candidates] == ["last", "avg"]
    assert choice.counts.sum() >= 1 and choice.estimate["low"] <= choice.estimate["score"] <= choice.estimate["high"]
    assert choice.val_score >= max(choice.singles), "greedy selection starts from the best single candidate"
    path = write_ensemble_choice(tmp_path, choice, candidates, task)
    record = read_json(path)
    assert str(tmp_path) not in path.read_text() and record["estimate"]["rule"] == "ensemble choice"
    chosen = [c for c, n in zip(candidates, choice.counts) if n]
    loaded = load_for_prediction(str(path))
    assert [m.weight for m in loaded.members] == [float(n) for n in choice.counts if n]
    assert [p.name for p in loaded.sources] == [c.run.name for c in chosen]
    package = package_submission(str(path), out_dir=tmp_path / "sub", name="choice")
    assert package.spec["estimate"]["score"] == pytest.approx(record["estimate"]["score"])
    assert [m["weight"] for m in package.spec["members"]] == [float(n) for n in choice.counts if n]
    row = read_ledger().iloc[-1]
    assert row["name"] == "choice" and row["estimate"] == pytest.approx(record["estimate"]["score"])


def test_the_newest_run_still_training_is_named_not_crashed_on(runs, monkeypatch):
    import fh_utils.runs as runs_module

    unfinished = runs["last"].parent / "still-training"
    unfinished.mkdir(exist_ok=True)
    (unfinished / "best.pt").write_bytes((runs["last"] / "best.pt").read_bytes())
    write_json(unfinished / CONFIG_FILE, {"train": {"checkpoint": "last"}, "task": {"name": "st2"}})
    monkeypatch.setattr(runs_module, "latest_run", lambda task, need, root=None: unfinished)
    with pytest.raises(FileNotFoundError, match=r"no 'last' checkpoint \(final\.pt\) yet"):
        load_for_prediction("", task="st2")
