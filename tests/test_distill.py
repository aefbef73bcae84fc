"""Knowledge distillation in the one engine: the loss, the teacher, the run folder, resume."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fh_utils.data.datasets import create_dataset, create_loaders
from fh_utils.models.factory import create_model
from fh_utils.runs import read_json
from fh_utils.tasks import get_task
from fh_utils.training.config import TrainConfig
from fh_utils.training.distill import DistillationLoss, build_teacher
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.losses import MultiHeadLoss

LIMIT = 96  # rows per split: enough for a few batches, small enough for the default test run
TIMING = ["seconds", "train_img_per_s"]


def _fit(root, run_dir, epochs=1, teacher=None, resume=False, seed=3, **kw):
    torch.set_num_threads(1)
    loaders = create_loaders(root, "st1", img_size=32, batch_size=16, limit=LIMIT, augment="myungbin")
    seed_everything(seed)
    model = create_model("st1", "mobilenetv4_conv_small", img_size=32)
    cfg = dict(epochs=epochs, lr=2e-3, scheduler="warmup_cosine", warmup_epochs=0.5, seed=seed, device="cpu")
    return fit(model, loaders, run_dir, {**cfg, **kw}, resume=resume, progress=False, teacher=teacher)


@pytest.fixture(scope="module")
def teacher_run(demo_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "teacher"
    _fit(demo_root, run, epochs=1, seed=11)
    return run


def test_loss_is_the_weighted_sum_of_label_smoothed_ce_and_t2_scaled_kl():
    task = get_task("st1")
    torch.manual_seed(0)
    out = {h.column: torch.randn(4, h.num_classes) for h in task.heads}
    teach = {h.column: torch.randn(4, h.num_classes).softmax(1) for h in task.heads}
    y = torch.stack([torch.randint(0, h.num_classes, (4,)) for h in task.heads], 1)
    hard = MultiHeadLoss(task, TrainConfig(label_smoothing=0.1))
    total, ce, kd = DistillationLoss(hard, alpha=0.3, temperature=2.0)(out, y, teach)
    want_ce = sum(F.cross_entropy(out[h.column], y[:, j], label_smoothing=0.1) for j, h in enumerate(task.heads))
    want_kd = 0.0
    for h in task.heads:
        p, q = teach[h.column], (out[h.column] / 2.0).softmax(1)
        want_kd += 4.0 * (p * (p.log() - q.log())).sum(1).mean()
    assert ce.item() == pytest.approx(want_ce.item(), rel=1e-5)
    assert kd.item() == pytest.approx(float(want_kd), rel=1e-5)
    assert total.item() == pytest.approx(0.7 * want_ce.item() + 0.3 * float(want_kd), rel=1e-5)
    # a teacher that agrees with the student adds nothing
    same = {k: (v / 2.0).softmax(1) for k, v in out.items()}
    assert DistillationLoss(hard, 0.5, 2.0)(out, y, same)[2].item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_run_logs_both_terms_and_keeps_no_teacher_weights(demo_root, tmp_path, teacher_run):
    run = tmp_path / "student"
    # an ensemble teacher: two members (here the same run twice), probabilities averaged
    res = _fit(demo_root, run, epochs=1, teacher=f"{teacher_run},{teacher_run}", distill_alpha=0.7)
    history = pd.read_csv(run / "history.csv")
    assert {"train_ce", "train_kd", "train_loss"} <= set(history)
    row = history.iloc[0]
    assert row["train_ce"] > 0 and row["train_kd"] > 0
    assert row["train_loss"] == pytest.approx(0.3 * row["train_ce"] + 0.7 * row["train_kd"], rel=1e-4)
    config = read_json(run / "config.json")
    assert config["teacher"]["members"] == [str(teacher_run)] * 2 and config["train"]["distill_alpha"] == 0.7
    student_keys = set(res.model.state_dict())
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert set(ckpt["model"]) == student_keys, name
        assert not any("teacher" in k or "members" in k for k in ckpt), name
    # the optimizer holds the student's parameters only (the teacher is frozen and outside it)
    assert sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"]) == len(list(res.model.parameters()))


def test_killed_and_resumed_distillation_equals_an_uninterrupted_run(demo_root, tmp_path, teacher_run, monkeypatch):
    full = _fit(demo_root, tmp_path / "full", epochs=2, teacher=str(teacher_run)).history

    from fh_utils.data import datasets

    original = datasets.FashionHowDataset.__getitem__
    per_epoch = len(create_dataset(demo_root, "st1", "train", img_size=32, limit=LIMIT))
    calls = {"n": 0}

    def crash_in_second_epoch(self, i):
        if self.train:
            calls["n"] += 1
            if calls["n"] > per_epoch + 20:
                raise KeyboardInterrupt("simulated kill mid-epoch")
        return original(self, i)

    monkeypatch.setattr(datasets.FashionHowDataset, "__getitem__", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _fit(demo_root, tmp_path / "cut", epochs=2, teacher=str(teacher_run))
    monkeypatch.setattr(datasets.FashionHowDataset, "__getitem__", original)
    assert len(pd.read_csv(tmp_path / "cut" / "history.csv")) == 1
    resumed = _fit(demo_root, tmp_path / "cut", epochs=2, teacher=str(teacher_run), resume=True).history
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_teacher_from_a_timm_name_and_a_local_weights_file(tmp_path):
    task = get_task("st1")
    seed_everything(0)
    model = create_model(task, "mobilenetv4_conv_small", img_size=32)
    torch.save(model.state_dict(), tmp_path / "teacher.pth")
    student = create_model(task, "mobilenetv4_conv_small", img_size=32)
    teacher = build_teacher(f"mobilenetv4_conv_small@{tmp_path / 'teacher.pth'}", task, student)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    teacher.train()  # stays in eval mode
    assert not teacher.members[0].training
    with torch.no_grad():
        want = {k: (v / 3.0).softmax(1) for k, v in model.eval()(x).items()}
        got = teacher.probabilities(x, 3.0)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_teacher_for_another_task_or_missing_is_refused(tmp_path):
    st2_model = create_model("st2", "fh_colornet", img_size=32)
    with pytest.raises(ValueError, match="predicts"):
        build_teacher([st2_model], get_task("st1"))
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        build_teacher(str(tmp_path / "no-such-run"), get_task("st1"))


def test_notebook_parameters_route_the_teacher_by_run_name(demo_root, tmp_path, teacher_run, monkeypatch):
    import shutil

    from fh_utils.paths import runs_dir
    from fh_utils.workbook import workflow

    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path / "out"))
    shutil.copytree(teacher_run, runs_dir() / "my-teacher")
    params = dict(data_root=str(demo_root), run_name="kd", backbone="mobilenetv4_conv_small", pretrained=False,
                  img_size=32, epochs=1, batch_size=16, limit=48, device="cpu", num_workers=0, cache=False,
                  teacher="my-teacher", distill_alpha=0.25, distill_temperature=2.0)  # fmt: skip
    setup = workflow.prepare_training("st1", params)
    assert setup.train.distill_alpha == 0.25 and setup.train.distill_temperature == 2.0
    assert "teacher   my-teacher" in setup.describe()
    run_dir, res = workflow.train_from_params("st1", params, progress=False)
    config = read_json(run_dir / "config.json")
    assert config["teacher"]["members"] == [str((runs_dir() / "my-teacher").resolve())]
    assert config["run"]["teacher"] == "my-teacher" and "train_kd" in res.history
    assert workflow.resolve_teacher("") is None
