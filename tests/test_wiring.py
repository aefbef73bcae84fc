"""Checked pieces reached through the path a user takes, so a piece that is tested alone but no longer wired in
fails here: the balanced sampler in create_loaders, the 25 MB check of an ensemble built by notebook 05, the
configured distillation temperature inside fit, the teacher kept out of best.pt, an int8 export's crop settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fh_utils.data.datasets import balanced_sample_weights, create_loaders
from fh_utils.data.reader import read_split
from fh_utils.io import read_json, write_json
from fh_utils.models.ensemble import build_ensemble
from fh_utils.models.factory import RulesError, create_model, load_model, state_dict_size_mb
from fh_utils.tasks import get_task
from fh_utils.training.metrics import task_metrics
from fh_utils.workbook import submission

# ------------------------------------------------------------------------------------ balanced sampler


def _drawn_labels(loader, column: str, epochs: int) -> np.ndarray:
    """Labels of the rows the train loader's batches hold, over ``epochs`` passes (indices only, no decoding)."""
    labels = loader.dataset.df[column].to_numpy()
    return labels[np.concatenate([np.concatenate(list(loader.batch_sampler)) for _ in range(epochs)])]


@pytest.mark.parametrize("task,head", [("st2", "Color"), ("st1", "Embellishment")])
def test_create_loaders_balanced_draws_every_class_equally_often(demo_root, task, head):
    """The demo's train split is imbalanced (ST2 colours up to ~30:1); the loader's batches, as fit iterates
    them, must draw each class about equally often when sampler="balanced", and in proportion otherwise."""
    kw = dict(img_size=32, batch_size=16, num_workers=0)
    sampler_head = "" if task == "st2" else head  # ST2: the first head by default; ST1: the one asked for
    balanced = create_loaders(demo_root, task, splits=("train",), sampler="balanced", sampler_head=sampler_head,
                              **kw)["train"]  # fmt: skip
    plain = create_loaders(demo_root, task, splits=("train",), **kw)["train"]
    num_classes = get_task(task).head(head).num_classes
    truth = np.bincount(balanced.dataset.df[head].to_numpy(), minlength=num_classes)
    present = truth > 0
    assert truth[present].max() >= 3 * truth[present].min(), truth  # imbalanced enough to tell them apart
    # The wiring: the loader samples with the per-row weights 1 / count of its class on the asked head.
    weights = balanced.sampler.weights.numpy()
    assert np.allclose(weights, balanced_sample_weights(balanced.dataset.df[head].to_numpy(), num_classes))
    # What the batches hold: near-uniform shares over the present classes (the shuffle keeps the imbalance).
    epochs = 40
    shares = np.bincount(_drawn_labels(balanced, head, epochs), minlength=num_classes)[present]
    shares = shares / shares.sum()
    n = epochs * len(balanced.dataset)
    sigma = np.sqrt((1 / present.sum()) * (1 - 1 / present.sum()) / n)
    assert np.all(np.abs(shares - 1 / present.sum()) < 6 * sigma + 0.01), shares
    one_pass = np.concatenate(list(plain.batch_sampler))
    assert len(set(one_pass.tolist())) == len(one_pass), "shuffle: each row at most once per epoch"
    plain_shares = np.bincount(_drawn_labels(plain, head, epochs), minlength=num_classes)[present]
    plain_shares = plain_shares / plain_shares.sum()
    assert np.abs(plain_shares - 1 / present.sum()).max() > 6 * sigma + 0.01, "the check can fail"


# ------------------------------------------------------------------------- ensemble budget, notebook 05


def _fake_run(folder: Path, backbone: str) -> Path:
    """A run folder as training leaves it (best.pt with model_config, config.json), untrained weights."""
    model = create_model("st2", backbone, img_size=32)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, folder / "best.pt")
    write_json(folder / "config.json", {"task": {"name": "st2"}, "data": {"crop_margin": 0.0, "crop_prob": 1.0}})
    return folder


def test_notebook_05_refuses_an_ensemble_whose_members_sum_over_25_mb(demo_root, tmp_path):
    """mobilenetv2_100 saves 9.2 MB: two sum to 18.5 MB (allowed), three to 27.7 MB (over the 25 MB budget),
    each member alone under it; so the check that matters is the sum, made on the real path."""
    runs = [_fake_run(tmp_path / f"r{i}", "mobilenetv2_100") for i in range(3)]
    size = state_dict_size_mb(load_model(runs[0]))
    assert 8 < size < 12.5, size
    with pytest.raises(RulesError, match=r"sum to 27\.\d\d MB .*over the 25 MB budget"):
        submission.prepare_submission(",".join(map(str, runs)), data_root=str(demo_root), threads=1,
                                      ensemble_name="over-budget")  # fmt: skip
    with pytest.raises(RulesError, match="over the 25 MB budget"):
        build_ensemble(runs)
    assert [m.size_mb for m in build_ensemble(runs, size_budget=False)] == pytest.approx([size] * 3)
    setup = submission.prepare_submission(",".join(map(str, runs[:2])), data_root=str(demo_root), threads=1,
                                          ensemble_name="within-budget")  # fmt: skip
    assert read_json(setup.run_dir / "manifest.json")["size_mb"] == pytest.approx(2 * size, abs=1e-3)


# ---------------------------------------------------------------------------------------- distillation

DISTILL_T = 4.0  # not the default (2.0): a fit that used any other temperature is told apart


def _teacher_run(folder: Path) -> Path:
    """An ST1 run folder with a sharp untrained teacher (its heads scaled up, so temperatures differ a lot)."""
    torch.manual_seed(5)
    model = create_model("st1", "mobilenetv4_conv_small", img_size=32)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.mul_(20.0)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, folder / "best.pt")
    write_json(folder / "config.json", {"task": {"name": "st1"}})
    return folder


@pytest.fixture(scope="module")
def distilled(demo_root, tmp_path_factory):
    """One distilled fit (teacher given as a run folder, as notebooks 03/04 pass it) with spies on what the
    teacher receives and what the loss is given; the spies call the real code."""
    from fh_utils.training import distill
    from fh_utils.training.engine import fit, seed_everything

    base = tmp_path_factory.mktemp("distill")
    teacher_dir = _teacher_run(base / "teacher")
    seen = {"inputs": [], "probs": [], "outputs": [], "soft": [], "loss_t": []}
    probabilities, forward = distill.Teacher.probabilities, distill.DistillationLoss.forward

    def spy_probabilities(self, x, temperature):
        seen["inputs"].append(x.detach().clone())
        return probabilities(self, x, temperature)

    def spy_forward(self, outputs, targets, teacher_probs):
        total, hard, soft = forward(self, outputs, targets, teacher_probs)
        seen["outputs"].append({k: v.detach().float().clone() for k, v in outputs.items()})
        seen["probs"].append({k: v.detach().clone() for k, v in teacher_probs.items()})
        seen["soft"].append(soft.detach().item())
        seen["loss_t"].append(self.temperature)
        return total, hard, soft

    torch.set_num_threads(1)
    loaders = create_loaders(demo_root, "st1", img_size=32, batch_size=16, limit=48)
    seed_everything(0)
    student = create_model("st1", "mobilenetv4_conv_small", img_size=32)
    cfg = dict(epochs=1, lr=2e-3, scheduler="warmup_cosine", seed=0, device="cpu", distill_alpha=0.5,
               distill_temperature=DISTILL_T)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill.Teacher, "probabilities", spy_probabilities)
        mp.setattr(distill.DistillationLoss, "forward", spy_forward)
        fit(student, loaders, base / "student", cfg, progress=False, teacher=str(teacher_dir))
    return {"teacher": teacher_dir, "run": base / "student", **seen}


def test_fit_softens_the_teacher_and_the_student_at_the_configured_temperature(distilled):
    teacher = load_model(distilled["teacher"]).eval()
    assert len(distilled["inputs"]) == len(distilled["probs"]) >= 2  # one teacher pass per training step
    for x, probs, outputs, soft, t in zip(distilled["inputs"], distilled["probs"], distilled["outputs"],
                                          distilled["soft"], distilled["loss_t"]):  # fmt: skip
        with torch.no_grad():
            logits = teacher(x)
        want_kd = 0.0
        for column, p in probs.items():
            torch.testing.assert_close(p, (logits[column].float() / DISTILL_T).softmax(1), atol=1e-5, rtol=1e-4)
            assert not torch.allclose(p, logits[column].float().softmax(1), atol=1e-3), "the check can fail"
            log_q = F.log_softmax(outputs[column] / DISTILL_T, dim=1)
            want_kd += DISTILL_T**2 * F.kl_div(log_q, p, reduction="batchmean").item()
        assert t == DISTILL_T and soft == pytest.approx(want_kd, rel=1e-4)


def test_best_and_last_pt_hold_the_student_s_own_weights_only(distilled):
    """Read back from disk and compared with a freshly built student's own parameter and buffer names (not with
    the trained model's state dict, which would hold a teacher attached to it just the same)."""
    fresh = create_model("st1", "mobilenetv4_conv_small", img_size=32)
    own = {n for n, _ in fresh.named_parameters()} | {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in fresh.named_modules()
        for name, buf in module.named_buffers(recurse=False)
        if name not in module._non_persistent_buffers_set  # the normalisation constants are not saved
    }
    teacher_keys = set(torch.load(distilled["teacher"] / "best.pt", weights_only=True)["model"])
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(distilled["run"] / name, map_location="cpu", weights_only=True)
        assert set(ckpt["model"]) == own, (name, sorted(set(ckpt["model"]) ^ own)[:5])
        assert sum(v.numel() for v in ckpt["model"].values()) == sum(v.numel() for v in fresh.state_dict().values())
        fresh.load_state_dict(ckpt["model"], strict=True)
        others = [k for k, v in ckpt.items() if isinstance(v, dict) and teacher_keys & set(v) and k != "model"]
        assert others in ([], ["ema"]), (name, others)  # no second state dict besides an EMA of the student
    assert (distilled["run"] / "best.pt").stat().st_size < 1.2 * state_dict_size_mb(fresh) * 1e6


# --------------------------------------------------------------------------------- int8 and crop settings

CROP_MARGIN = 0.4  # far from the default 0.0: an export that forgot it feeds visibly different crops


@pytest.fixture(scope="module")
def margin_run(demo_root) -> Path:
    from fh_utils.workbook import workflow

    params = dict(data_root=str(demo_root), run_name="int8-margin", backbone="fh_colornet", img_size=32, epochs=1,
                  batch_size=16, lr=2e-3, scheduler="warmup_cosine", device="cpu", num_workers=0, cache=False,
                  limit=64, color_baseline=False, crop_margin=CROP_MARGIN)  # fmt: skip
    run_dir, _ = workflow.train_from_params("st2", params, progress=False)
    return run_dir


def test_an_int8_export_scores_through_notebook_05_with_its_run_s_crop_margin(margin_run, demo_root):
    from fh_utils.models.export import export_int8

    assert read_json(margin_run / "config.json")["data"]["crop_margin"] == CROP_MARGIN
    path = export_int8(margin_run)
    fp32 = submission.predict_submission(submission.prepare_submission(str(margin_run), data_root=str(demo_root),
                                                                       threads=1), progress=False)  # fmt: skip
    int8_setup = submission.prepare_submission(str(path.parent), data_root=str(demo_root), threads=1)
    assert int8_setup.model_path == path
    int8 = submission.predict_submission(int8_setup, progress=False)
    assert int8.members[0].data.get("crop_margin") == CROP_MARGIN
    p32, p8 = fp32.probabilities["Color"], int8.probabilities["Color"]
    assert len(p8) == len(read_split(demo_root, "st2", "val")) > 50
    gap = np.abs(p8 - p32).max()
    # The same export with its crop settings dropped, as an export that forgot them would be: the default margin.
    forgot = path.parent.with_name(path.parent.name + "-forgot")
    shutil.copytree(path.parent, forgot)
    state = torch.load(forgot / path.name, weights_only=True)
    torch.save({**state, "data": {}}, forgot / path.name)
    wrong = submission.predict_submission(submission.prepare_submission(str(forgot), data_root=str(demo_root),
                                                                        threads=1), progress=False)  # fmt: skip
    assert wrong.members[0].data == {}
    wrong_gap = np.abs(wrong.probabilities["Color"] - p32).max()
    assert gap < 0.25 * wrong_gap, (gap, wrong_gap)  # quantisation moves probabilities far less than the crops
    assert np.mean(int8.submission["color"].to_numpy() == fp32.submission["color"].to_numpy()) >= 0.9
    fp32_score, int8_score = (task_metrics(r.task, *r.labels())["score"] for r in (fp32, int8))
    assert int8_score == pytest.approx(fp32_score, abs=0.05)
