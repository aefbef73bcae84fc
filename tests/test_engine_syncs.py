"""``fit`` reads nothing back from the device inside an epoch (issue 22): every read of a tensor's value (``.item()``,
``float(t)``, ``.tolist()``, ``.cpu()``, formatting...) makes the host wait for the GPU. On CPU such reads are
counted by wrapping those ``Tensor`` methods; only calls made by the package's own code during the training part of
an epoch count (torch's internals, evaluation and checkpoints do not)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import fh_utils
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model
from fh_utils.training import engine
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.losses import MultiHeadLoss, class_priors

PACKAGE = str(Path(fh_utils.__file__).parent)
READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__", "__format__", "__repr__")
STEPS = 6  # 96 rows, batch 16


@pytest.fixture
def count_reads(monkeypatch):
    """Counts, per method name, the reads of a tensor's value made by fh_utils code inside ``_train_one_epoch``."""
    counts: dict[str, int] = {}
    inside = {"epoch": False}

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if inside["epoch"] and caller.startswith(PACKAGE):
                counts[name] = counts.get(name, 0) + 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    original_epoch = engine._train_one_epoch

    def one_epoch(*args, **kwargs):
        inside["epoch"] = True
        try:
            return original_epoch(*args, **kwargs)
        finally:
            inside["epoch"] = False

    monkeypatch.setattr(engine, "_train_one_epoch", one_epoch)
    return counts


def _fit(root, run_dir, task="st2", progress=False, **kw):
    loaders = create_loaders(root, task, img_size=32, batch_size=16, limit=96, augment="none")
    assert len(loaders["train"]) == STEPS
    priors = class_priors(loaders["train"].dataset.targets, loaders["train"].dataset.task)
    teacher = None
    if kw.pop("teacher", False):
        seed_everything(3)
        teacher = create_model(task, "fh_colornet", img_size=32)
    seed_everything(0)
    model = create_model(task, "fh_colornet", img_size=32)
    return fit(model, loaders, run_dir, {"epochs": 1, "lr": 2e-3, "device": "cpu", **kw}, progress=progress,
               class_priors=priors, teacher=teacher)  # fmt: skip


@pytest.mark.parametrize("task,kw", [
    ("st2", {}),
    ("st1", {"loss": "logit_adjust", "ema": True, "grad_clip": 1.0}),  # three heads, every per-step option
    ("st2", {"teacher": True, "distill_alpha": 0.5}),  # distillation: two more running sums
])  # fmt: skip
def test_an_epoch_reads_its_running_sums_once(demo_root, tmp_path, count_reads, task, kw):
    res = _fit(demo_root, tmp_path / "run", task, **kw)
    assert count_reads == {"tolist": 1}, f"{STEPS} steps read {count_reads} from the device"
    row = res.history.iloc[0]
    assert 0.0 < row["train_loss"] < 10.0 and 0.0 <= row["train_top1"] <= 1.0
    if "teacher" in kw:
        assert row["train_ce"] > 0 and row["train_kd"] >= 0


def test_the_progress_bar_reads_every_progress_every_steps(demo_root, tmp_path, count_reads, monkeypatch):
    monkeypatch.setattr(engine, "PROGRESS_EVERY", 2)
    _fit(demo_root, tmp_path / "run", progress=True)
    assert count_reads == {"tolist": STEPS // 2 + 1}, count_reads


def test_the_logit_adjusted_loss_keeps_its_log_priors_as_buffers_that_follow_the_module():
    """No step copies the priors to the device: ``criterion.to(device)`` (in ``fit``) moves them once."""
    from fh_utils.tasks import get_task
    from fh_utils.training.config import TrainConfig

    task = get_task("st1")
    priors = {h.column: torch.full((h.num_classes,), 1.0 / h.num_classes) for h in task.heads}
    criterion = MultiHeadLoss(task, TrainConfig(loss="logit_adjust"), priors)
    buffers = dict(criterion.named_buffers())
    assert len(buffers) == len(task.heads) and not criterion.state_dict()  # not saved anywhere
    for j, h in enumerate(task.heads):
        torch.testing.assert_close(buffers[f"log_prior_{j}"], priors[h.column].log(), rtol=0, atol=0)
    assert {b.device.type for b in criterion.to("meta").buffers()} == {"meta"}
