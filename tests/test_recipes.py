"""The long-tail recipes of issue 31: deferred re-balancing (DRS / DRW), classifier re-training (cRT), CutMix / mixup.

Each test checks the behaviour itself: the rows each epoch draws and the loss's class weights each epoch uses,
the backbone's weights and buffers before and after cRT, every pixel of a CutMix batch. Tiny synthetic data in
memory (48 imbalanced rows of 32 px, 3 steps an epoch) and ``fh_colornet``: the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fh_utils.data.datasets import create_balanced_sampler
from fh_utils.models.factory import create_model, load_model
from fh_utils.runs import read_json
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.sweeps.spec import load_spec
from fh_utils.tasks import get_task
from fh_utils.training import engine
from fh_utils.training.config import TrainConfig
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.losses import MultiHeadLoss, class_priors
from fh_utils.training.mixing import BatchMixer, Mix, mixed_loss, soft_targets
from fh_utils.training.rebalance import Rebalancer, effective_number_weights
from fh_utils.workbook import workflow

SIZE, ROWS, BATCH = 32, 48, 16
TIMING = ["seconds", "train_img_per_s"]


class TinySet(Dataset):
    """Rows of uint8 images whose colour follows the first label; records every row it serves."""

    def __init__(self, targets: np.ndarray, seed: int):
        rng = np.random.default_rng(seed)
        self.targets = targets
        base = (targets[:, :1] * 53 % 256)[:, :, None, None] + rng.integers(0, 40, (len(targets), 3, SIZE, SIZE))
        self.images = torch.from_numpy((base % 256).astype(np.uint8))
        self.df = pd.DataFrame({"image_name": [f"{i}.jpg" for i in range(len(targets))]})
        self.served: list[int] = []

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        self.served.append(int(i))
        return self.images[i], torch.from_numpy(self.targets[i])


def _targets(task: str, seed: int = 0) -> np.ndarray:
    first = np.repeat([0, 1, 2], [36, 8, 4])  # 9:2:1, as a long tail
    if task == "st2":
        return first[:, None].astype(np.int64)
    rng = np.random.default_rng(seed)
    return np.stack([first, rng.integers(0, 5, ROWS), rng.integers(0, 3, ROWS)], 1).astype(np.int64)


def _loaders(task: str = "st2") -> dict[str, DataLoader]:
    train, val = TinySet(_targets(task), 0), TinySet(_targets(task, 1)[::2], 1)
    return {"train": DataLoader(train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)),
            "val": DataLoader(val, batch_size=32)}  # fmt: skip


def _fit(run_dir, task="st2", loaders=None, **cfg):
    kw = cfg.pop("kw", {})  # fit's own arguments (callbacks, resume)
    seed_everything(0)
    model = create_model(task, "fh_colornet", img_size=SIZE)
    loaders = loaders or _loaders(task)
    base = dict(epochs=4, lr=3e-3, scheduler="warmup_cosine", warmup_epochs=0.5, seed=0, device="cpu", threads=1,
                keep_epochs=0, label_smoothing=0.1)  # fmt: skip
    priors = class_priors(loaders["train"].dataset.targets, get_task(task)) if cfg.get("loss") else None
    return fit(model, loaders, run_dir, {**base, **cfg}, progress=False, class_priors=priors, **kw)


def _history(result) -> pd.DataFrame:
    return result.history.drop(columns=TIMING)


# ------------------------------------------------------------------------------------------------ settings


def test_recipe_settings_are_validated_with_clear_errors():
    with pytest.raises(ValueError, match=r"mix must be one of \('none', 'cutmix', 'mixup'\), got 'cutmx'"):
        TrainConfig(mix="cutmx")
    with pytest.raises(ValueError, match="rebalance must be one of"):
        TrainConfig(rebalance="drw")
    with pytest.raises(ValueError, match=r"rebalance_epoch must be 1..epochs \(4\)"):
        TrainConfig(epochs=4, rebalance="sampler", rebalance_epoch=5)
    with pytest.raises(ValueError, match="mix_prob"):
        TrainConfig(mix="cutmix", mix_prob=1.5)
    with pytest.raises(ValueError, match="crt_epochs"):
        TrainConfig(crt_epochs=-1)
    with pytest.raises(ValueError, match="drw_beta must be between 0 and 1"):
        TrainConfig(rebalance="reweight", drw_beta=1.0)


def test_recipes_are_notebook_parameters_and_sweepable(tmp_path):
    params = dict(data_root=str(tmp_path), imbalance="sampler", rebalance="reweight", rebalance_epoch=0, epochs=12,
                  crt_epochs=2, mix="cutmix", mix_prob=1.0, mix_alpha=0.4)  # fmt: skip
    setup = workflow.prepare_training("st2", params)
    # rebalance takes the place of the sampler of imbalance="sampler": plain sampling until its epoch
    assert setup.data.sampler == "shuffle" and setup.train.rebalance == "reweight" and setup.train.crt_epochs == 2
    assert "DRW (effective-number class weights) from epoch 10" in setup.describe()
    plain = workflow.prepare_training("st2", {"data_root": str(tmp_path), "imbalance": "sampler"})
    assert plain.data.sampler == "balanced"
    for notebook in ("03_train_st1.ipynb", "04_train_st2.ipynb"):
        load_spec({"name": "recipes", "notebook": notebook, "fixed": {"crt_epochs": 2, "mix_alpha": 1.0},
                   "grid": {"rebalance": ["none", "sampler"], "mix": ["none", "cutmix"], "rebalance_epoch": [0],
                            "mix_prob": [0.5]}})  # fmt: skip


# ------------------------------------------------------------------------------------------------ mixing


def _distinct_batch(b: int = 7) -> torch.Tensor:
    # Image i's pixel (c, h, w) is (37 i + 11 c + 3 h + 5 w) mod 256: two images differ at every pixel (37 is odd).
    i, c, h, w = torch.meshgrid(*(torch.arange(n) for n in (b, 3, SIZE, SIZE)), indexing="ij")
    return ((37 * i + 11 * c + 3 * h + 5 * w) % 256).to(torch.uint8)


def test_cutmix_never_blends_a_pixel_and_its_weight_is_the_area_left():
    x, y = _distinct_batch(), torch.arange(7)[:, None]
    mixed = 0
    for epoch in range(40):
        out, mix = BatchMixer(TrainConfig(mix="cutmix", mix_prob=0.7, seed=1), epoch)(x, y)
        if mix is None:
            assert out is x
            continue
        mixed += 1
        assert out.dtype == torch.uint8 and out.shape == x.shape
        partner = x.flip(0)
        own = (out == x).all(1)  # (B, H, W): the whole pixel (every channel) is the image's own
        pasted = (out == partner).all(1)
        assert bool((own | pasted).all()), "a pixel that is neither image's: a blend"
        for i in range(len(x)):
            if i == len(x) // 2:
                continue  # the middle image is paired with itself
            area = pasted[i].float().mean().item()
            assert mix.lam == pytest.approx(1.0 - area, abs=1e-9)
            rows, cols = pasted[i].any(1).nonzero(), pasted[i].any(0).nonzero()
            if len(rows):  # the pasted pixels form one box
                assert pasted[i].sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert torch.equal(mix.targets_b, y.flip(0))
    assert 15 < mixed < 40  # mix_prob 0.7 of the batches
    again = BatchMixer(TrainConfig(mix="cutmix", mix_prob=0.7, seed=1), 3)(x, y)[0]
    assert torch.equal(again, BatchMixer(TrainConfig(mix="cutmix", mix_prob=0.7, seed=1), 3)(x, y)[0])


def test_mixup_targets_sum_to_one_and_the_mixed_loss_is_their_cross_entropy():
    task = get_task("st1")
    x, y = _distinct_batch(6), torch.from_numpy(_targets("st1")[:6][::-1].copy())
    out, mix = BatchMixer(TrainConfig(mix="mixup", mix_prob=1.0, seed=2), 0)(x, y)
    assert 0 < mix.lam < 1 and out.dtype == torch.float32
    torch.testing.assert_close(out, mix.lam * x.float() + (1 - mix.lam) * x.flip(0).float())
    targets = soft_targets(y, mix, [h.num_classes for h in task.heads])
    for t in targets:
        torch.testing.assert_close(t.sum(1), torch.ones(len(y)))
    logits = {h.column: torch.randn(6, h.num_classes) for h in task.heads}
    priors = class_priors(_targets("st1"), task)
    for loss in ("ce", "logit_adjust"):  # with label smoothing and with the balanced-softmax adjustment
        criterion = MultiHeadLoss(task, TrainConfig(loss=loss, label_smoothing=0.1), priors)
        shift = {h.column: priors[h.column].log() if loss == "logit_adjust" else 0.0 for h in task.heads}
        soft = sum(F.cross_entropy(logits[h.column] + shift[h.column], t, label_smoothing=0.1)
                   for h, t in zip(task.heads, targets))  # fmt: skip
        torch.testing.assert_close(mixed_loss(criterion, logits, y, mix), soft)
    assert mixed_loss(criterion, logits, y, None) == criterion(logits, y)
    halves = mixed_loss(lambda o, t: (criterion(o, t), 2 * criterion(o, t)), logits, y, Mix(y.flip(0), 0.25))
    torch.testing.assert_close(halves[1], 2 * halves[0])


# ------------------------------------------------------------------------------------------------ re-balancing


def test_effective_number_weights_follow_cui_et_al():
    w = effective_number_weights(np.array([36, 8, 4, 0]))
    expected = np.array([(1 - 0.9999) / (1 - 0.9999**n) for n in (36, 8, 4)])
    np.testing.assert_allclose(w[:3], expected * 3 / expected.sum())
    assert w[3] == 0 and w[2] > w[1] > w[0]
    counts = np.array([2, 1170, 300])  # products_b's rarest and commonest ST2 colours
    steep, capped = effective_number_weights(counts), effective_number_weights(counts, 0.99)
    assert steep[0] / steep[1] > 300 and 40 < capped[0] / capped[1] < 60, "beta 0.99 caps the spread near 50"
    assert capped[1] == pytest.approx(capped[2], rel=0.06), "classes over ~100 photos weigh alike"


def _served_per_epoch(loaders, history_len):
    served = loaders["train"].dataset.served
    per_epoch = len(served) // history_len
    return [np.bincount(loaders["train"].dataset.targets[served[e * per_epoch : (e + 1) * per_epoch], 0],
                        minlength=3) for e in range(history_len)]  # fmt: skip


def test_drs_switches_to_the_balanced_sampler_at_the_stated_epoch_and_a_resume_switches_alike(tmp_path):
    plain = _fit(tmp_path / "plain")
    loaders = _loaders()
    drs = _fit(tmp_path / "drs", loaders=loaders, rebalance="sampler", rebalance_epoch=3)
    assert drs.history["rebalanced"].tolist() == [0, 0, 1, 1]
    counts = _served_per_epoch(loaders, 4)
    assert [c.tolist() for c in counts[:2]] == [[36, 8, 4]] * 2  # plain: every row once
    for c in counts[2:]:  # balanced: about 16 of each class
        assert c.min() >= 9 and c.max() <= 24, c
    h_plain, h_drs = _history(plain), _history(drs).drop(columns="rebalanced")
    pd.testing.assert_frame_equal(h_plain.iloc[:2], h_drs.iloc[:2])
    assert h_plain["train_loss"].iloc[2] != h_drs["train_loss"].iloc[2]

    def stop_after_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", rebalance="sampler", rebalance_epoch=3, kw={"callbacks": [stop_after_3]})
    resumed = _fit(tmp_path / "cut", rebalance="sampler", rebalance_epoch=3, kw={"resume": True})
    pd.testing.assert_frame_equal(_history(resumed), _history(drs))


def test_a_drs_weight_average_re_estimates_batchnorm_on_the_balanced_batches_its_epochs_drew(tmp_path):
    loaders = _loaders()
    _fit(tmp_path / "drs-avg", loaders=loaders, rebalance="sampler", rebalance_epoch=3, checkpoint="avg", keep_epochs=2)
    served = loaders["train"].dataset.served
    assert len(served) == 5 * ROWS, "four epochs and one batch-norm pass"
    bn_pass = np.bincount(loaders["train"].dataset.targets[served[-ROWS:], 0], minlength=3)
    assert bn_pass.min() >= 9 and bn_pass.max() <= 24, f"re-estimated on plain sampling: {bn_pass}"


def test_drs_refuses_a_loader_that_is_balanced_from_the_start():
    loaders = _loaders()
    ds = loaders["train"].dataset
    balanced = DataLoader(ds, batch_size=BATCH, sampler=create_balanced_sampler(ds.targets[:, 0], 18))
    with pytest.raises(ValueError, match="class-balanced from the first epoch"):
        Rebalancer(TrainConfig(epochs=4, rebalance="reweight"), get_task("st2"), balanced)


def test_drw_weights_the_training_loss_from_the_stated_epoch_only(tmp_path, monkeypatch):
    seen: list[tuple[bool, object]] = []

    class Recording(MultiHeadLoss):
        def forward(self, outputs, targets):
            weights = self.class_weights
            seen.append((torch.is_grad_enabled(), None if weights is None else weights["Color"].clone()))
            return super().forward(outputs, targets)

    monkeypatch.setattr(engine, "MultiHeadLoss", Recording)
    marks = []
    drw = _fit(tmp_path / "drw", rebalance="reweight", rebalance_epoch=3, drw_beta=0.99,
               kw={"callbacks": [lambda r: marks.append(len(seen))]})  # fmt: skip
    assert drw.history["rebalanced"].tolist() == [0, 0, 1, 1]
    expected = torch.tensor(effective_number_weights(np.bincount(_targets("st2")[:, 0], minlength=18), 0.99),
                            dtype=torch.float32)  # fmt: skip
    starts = [0, *marks[:-1]]
    for epoch, (start, end) in enumerate(zip(starts, marks), 1):
        calls = seen[start:end]
        train = [w for grad, w in calls if grad]
        assert len(train) == 3 and len(calls) == 4  # 3 training steps, 1 validation batch
        assert all(w is None for grad, w in calls if not grad), "the validation loss is never weighted"
        for w in train:
            if epoch < 3:
                assert w is None
            else:
                torch.testing.assert_close(w, expected)
    monkeypatch.undo()
    plain = _fit(tmp_path / "plain")
    pd.testing.assert_frame_equal(_history(plain).iloc[:2], _history(drw).drop(columns="rebalanced").iloc[:2])
    assert _history(plain)["train_loss"].iloc[2] != _history(drw)["train_loss"].iloc[2]


# ------------------------------------------------------------------------------------------------ cRT


def test_crt_leaves_the_backbone_bit_identical_and_retrains_the_heads(tmp_path):
    result = _fit(tmp_path / "crt", epochs=2, crt_epochs=2)
    best = torch.load(tmp_path / "crt" / "best.pt", weights_only=True)["model"]
    crt = torch.load(tmp_path / "crt" / "crt.pt", weights_only=True)["model"]
    assert best.keys() == crt.keys()
    backbone = [k for k in best if not k.startswith("heads.")]
    assert any(k.endswith("running_mean") for k in backbone) and any(k.endswith("num_batches_tracked")
                                                                    for k in backbone)  # fmt: skip
    for k in backbone:
        assert torch.equal(best[k], crt[k]), f"{k} moved during cRT"
    for k in ("heads.Color.weight", "heads.Color.bias"):
        assert not torch.equal(best[k], crt[k])
    model = load_model(tmp_path / "crt" / "crt.pt")
    assert model.heads["Color"].out_features == 18
    entry = read_json(tmp_path / "crt" / "metrics.json")["crt"]
    assert entry["file"] == "crt.pt" and entry["source"] == "best.pt" and len(entry["history"]) == 2
    assert 0.0 <= entry["score"] <= 1.0 and result.metrics["crt"]["score"] == entry["score"]
    stored = EpochPredictions.load(tmp_path / "crt" / entry["predictions"])
    assert stored.epochs.tolist() == [2] and stored.probabilities["Color"].shape == (1, 24, 18)
    written = (tmp_path / "crt" / "crt.pt").stat().st_mtime_ns
    again = _fit(tmp_path / "crt", epochs=2, crt_epochs=2, kw={"resume": True})  # a finished run resumed: no new epoch
    assert (tmp_path / "crt" / "crt.pt").stat().st_mtime_ns == written, "cRT was redone for a finished run"
    assert again.metrics["crt"] == entry
    (tmp_path / "crt" / "crt.pt").unlink()  # interrupted during cRT: no crt.pt yet, so a resume re-trains it
    _fit(tmp_path / "crt", epochs=2, crt_epochs=2, kw={"resume": True})
    assert torch.equal(torch.load(tmp_path / "crt" / "crt.pt", weights_only=True)["model"]["heads.Color.weight"],
                       crt["heads.Color.weight"]), "cRT is seeded: the re-trained heads are the same"  # fmt: skip


def test_every_recipe_at_once_on_the_three_heads_of_st1(tmp_path):
    result = _fit(tmp_path / "st1", task="st1", epochs=2, rebalance="reweight", rebalance_epoch=2, mix="cutmix",
                  mix_prob=1.0, crt_epochs=1, loss="logit_adjust")  # fmt: skip
    assert result.history["rebalanced"].tolist() == [0, 1]
    assert np.isfinite(result.history["train_loss"]).all()
    entry = result.metrics["crt"]
    assert set(entry["heads"]) == {"Daily", "Gender", "Embellishment"}
