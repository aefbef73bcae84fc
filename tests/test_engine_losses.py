"""The engine's losses and learning-rate schedules against hand computations (fast: no model is trained).

Pinned down: the class priors logit adjustment reads (values, smoothing of absent classes, dtype); the
logit-adjusted loss at a non-default ``tau`` and smoothing and at its defaults; the multi-head loss's per-head
weights, its default weight, the priors used only under ``loss="logit_adjust"``, its buffers; and the learning rate
of every scheduler at every step, as ``fit`` steps it (per step, fractional epochs for cosine restarts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fh_utils.tasks import get_task
from fh_utils.training.config import TrainConfig
from fh_utils.training.losses import MultiHeadLoss, class_priors, logit_adjusted_loss
from fh_utils.training.scheduler import create_scheduler, step_scheduler

ST1 = get_task("st1")  # three heads: Daily 6, Gender 5, Embellishment 3


def _outputs(seed: int = 0, batch: int = 7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    outputs = {h.column: (3 * torch.randn(batch, h.num_classes, generator=g)).to(dtype) for h in ST1.heads}
    targets = torch.stack([torch.randint(h.num_classes, (batch,), generator=g) for h in ST1.heads], dim=1)
    return outputs, targets


def test_class_priors_are_smoothed_frequencies_per_head_with_absent_classes_kept():
    targets = np.array([[0, 1, 2], [0, 1, 2], [5, 4, 2], [0, 1, 0]])  # Daily 1-4 and Embellishment 1 absent
    priors = class_priors(targets, ST1)
    assert list(priors) == ["Daily", "Gender", "Embellishment"]
    for j, head in enumerate(ST1.heads):
        counts = np.bincount(targets[:, j], minlength=head.num_classes) + 1e-3
        assert priors[head.column].dtype == torch.float32 and priors[head.column].shape == (head.num_classes,)
        assert torch.allclose(priors[head.column], torch.tensor(counts / counts.sum(), dtype=torch.float32))
    assert priors["Daily"][1].item() == pytest.approx(1e-3 / (4 + 6e-3), rel=1e-6)  # absent, not zero
    assert priors["Daily"][0].item() == pytest.approx(3.001 / 4.006, rel=1e-6)


def test_logit_adjusted_loss_is_ce_on_prior_shifted_logits():
    logits, target = torch.randn(9, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3] * 2 + [1])
    prior = torch.tensor([0.7, 0.2, 0.05, 0.05])
    got = logit_adjusted_loss(logits, target, prior.log(), tau=0.5, label_smoothing=0.2)
    assert torch.allclose(got, F.cross_entropy(logits + 0.5 * prior.log(), target, label_smoothing=0.2))
    default = logit_adjusted_loss(logits, target, prior.log())  # tau 1, no smoothing: the balanced softmax loss
    assert torch.allclose(default, F.cross_entropy(logits + prior.log(), target))
    assert not torch.allclose(default, F.cross_entropy(logits, target))
    assert logit_adjusted_loss(logits.double(), target, prior.log()).dtype == torch.float64  # follows the logits


def test_multi_head_loss_weights_each_head_and_defaults_to_one():
    outputs, targets = _outputs()
    cfg = TrainConfig(label_smoothing=0.15, head_weights={"Daily": 2.0, "Embellishment": 0.25})
    loss = MultiHeadLoss(ST1, cfg)(outputs, targets)
    expected = sum(w * F.cross_entropy(outputs[c], targets[:, j], label_smoothing=0.15)
                   for j, (c, w) in enumerate([("Daily", 2.0), ("Gender", 1.0), ("Embellishment", 0.25)]))  # fmt: skip
    assert torch.allclose(loss, expected)
    plain = MultiHeadLoss(ST1, TrainConfig(label_smoothing=0.0))(outputs, targets)
    unweighted = sum(F.cross_entropy(outputs[h.column], targets[:, j]) for j, h in enumerate(ST1.heads))
    assert torch.allclose(plain, unweighted)


def test_multi_head_loss_uses_the_priors_only_for_logit_adjust_at_its_tau():
    outputs, targets = _outputs(seed=2)
    priors = class_priors(targets.numpy(), ST1)
    ce = MultiHeadLoss(ST1, TrainConfig(label_smoothing=0.1), priors)
    assert ce.priors is None and dict(ce.named_buffers()) == {}
    assert torch.allclose(ce(outputs, targets), MultiHeadLoss(ST1, TrainConfig(label_smoothing=0.1))(outputs, targets))
    adjusted = MultiHeadLoss(ST1, TrainConfig(loss="logit_adjust", logit_adjust_tau=0.7, label_smoothing=0.1,
                                              head_weights={"Gender": 3.0}), priors)  # fmt: skip
    expected = sum((3.0 if h.column == "Gender" else 1.0) * logit_adjusted_loss(
        outputs[h.column], targets[:, j], priors[h.column].log(), tau=0.7, label_smoothing=0.1)
        for j, h in enumerate(ST1.heads))  # fmt: skip
    assert torch.allclose(adjusted(outputs, targets), expected)
    # log(prior) as non-persistent buffers: moved by .to(), never saved into a checkpoint.
    assert sorted(dict(adjusted.named_buffers())) == ["log_prior_0", "log_prior_1", "log_prior_2"]
    assert torch.equal(adjusted.log_prior_1, priors["Gender"].log()) and adjusted.state_dict() == {}


def test_multi_head_loss_computes_in_float32_from_half_precision_outputs():
    outputs, targets = _outputs(seed=3, dtype=torch.bfloat16)
    loss = MultiHeadLoss(ST1, TrainConfig(label_smoothing=0.0))(outputs, targets)
    assert loss.dtype == torch.float32
    exact = sum(F.cross_entropy(outputs[h.column].float(), targets[:, j]) for j, h in enumerate(ST1.heads))
    assert torch.equal(loss, exact)


def _lrs(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of ``cfg.epochs`` epochs, stepped as ``fit`` steps it."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = create_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for epoch in range(cfg.epochs):
        for i in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            step_scheduler(sched, cfg, epoch, i, steps_per_epoch)
    return lrs


def test_warmup_cosine_warms_up_linearly_then_decays_to_the_floor():
    cfg = TrainConfig(scheduler="warmup_cosine", epochs=3, lr=0.1, min_lr=0.01, warmup_epochs=0.5)
    lrs = _lrs(cfg, steps_per_epoch=4)  # 12 steps, 2 of them warm-up
    floor = 0.1
    expected = [0.1 * (s + 1) / 2 for s in range(2)] + [
        0.1 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - 2) / 10))) for s in range(2, 12)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[1] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.1)


def test_warmup_cosine_without_warmup_and_its_floor_once_done():
    cfg = TrainConfig(scheduler="warmup_cosine", epochs=1, lr=0.2, min_lr=0.02, warmup_epochs=0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = create_scheduler(opt, cfg, steps_per_epoch=5)
    factor = sched.lr_lambdas[0]
    assert factor(0) == pytest.approx(1.0) and factor(5) == pytest.approx(0.1) and factor(50) == pytest.approx(0.1)
    assert factor(1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 5)))
    # Warm-up as long as the run: the cosine part divides by max(1, 0), not by zero.
    whole = create_scheduler(opt, TrainConfig(scheduler="warmup_cosine", epochs=2, lr=0.2, min_lr=0.02,
                                               warmup_epochs=2), steps_per_epoch=3).lr_lambdas[0]  # fmt: skip
    assert [whole(s) for s in range(6)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert whole(6) == pytest.approx(1.0) and whole(7) == pytest.approx(0.1)
    # A run of zero steps still makes a schedule (total is at least one step).
    empty = create_scheduler(opt, TrainConfig(scheduler="warmup_cosine", epochs=0, lr=0.2, min_lr=0.02,
                                               warmup_epochs=0), steps_per_epoch=3).lr_lambdas[0]  # fmt: skip
    assert empty(0) == pytest.approx(1.0) and empty(1) == pytest.approx(0.1)


def test_no_scheduler_keeps_the_learning_rate():
    assert _lrs(TrainConfig(scheduler="none", epochs=2, lr=0.03, warmup_epochs=1), 3) == [0.03] * 6


def test_cosine_restarts_steps_in_fractional_epochs_with_its_cycle_settings():
    cfg = TrainConfig(scheduler="cosine_restarts", epochs=4, lr=0.1, min_lr=0.001, t_0=1, t_mult=2)
    lrs = _lrs(cfg, steps_per_epoch=4)

    def closed_form(t: float) -> float:  # cycles of 1, 2, 4 epochs
        start, length = 0.0, 1.0
        while t >= start + length - 1e-12:
            start, length = start + length, 2 * length
        return 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * (t - start) / length))

    expected = [closed_form(s / 4) for s in range(16)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert lrs[4] == pytest.approx(0.1) and lrs[12] == pytest.approx(0.1)  # restarts after epochs 1 and 3
    sched = create_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), cfg, 4)
    assert (sched.T_0, sched.T_mult, sched.eta_min) == (1, 2, 0.001)


def test_logit_adjusted_loss_moves_the_prior_to_the_logits_device():
    # A CPU prior with logits elsewhere (the meta device stands in for a GPU): the prior follows the logits.
    logits, target = torch.randn(3, 4, device="meta"), torch.zeros(3, dtype=torch.long, device="meta")
    assert logit_adjusted_loss(logits, target, torch.full((4,), 0.25).log()).device.type == "meta"


def test_the_logged_train_loss_and_top1_are_row_weighted_means_over_an_uneven_last_batch(tmp_path, monkeypatch):
    """10 rows in batches of 4, 4, 2 (the last one kept): each batch's loss and top-1 count once per row.

    The criterion returns the batch's mean label (0, 1 and 5: a known loss per batch, with a gradient path) and the
    model always predicts class 0 (right on the first batch only): train_loss = (4*0 + 4*1 + 2*5) / 10 and
    train_top1 = 4 / 10, where a mean of batch means gives 2.0 and 1/3 and a sum over batches / rows 0.6 and 0.1.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from fh_utils.training import engine

    class BatchMeanLabel(torch.nn.Module):
        def __init__(self, task, cfg, priors=None):
            super().__init__()

        def forward(self, outputs, targets):
            return targets[:, 0].float().mean() + 0.0 * outputs["Color"].sum()

    class AlwaysClass0(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            logits = torch.zeros(len(x), 18)
            logits[:, 0] = 100.0
            return {"Color": logits + 0.0 * self.w}

    monkeypatch.setattr(engine, "MultiHeadLoss", BatchMeanLabel)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 5, 5])[:, None]
    loader = DataLoader(TensorDataset(torch.zeros(10, 3, 4, 4), labels), batch_size=4, shuffle=False)
    assert [len(y) for _, y in loader] == [4, 4, 2]
    result = engine.fit(AlwaysClass0(), {"train": loader}, tmp_path / "run", dict(epochs=1, device="cpu", threads=1),
                        progress=False, task="st2")  # fmt: skip
    row = result.history.iloc[0]
    assert row["train_loss"] == pytest.approx(1.4, rel=1e-12, abs=0)
    assert row["train_top1"] == pytest.approx(0.4, rel=1e-12, abs=0)
