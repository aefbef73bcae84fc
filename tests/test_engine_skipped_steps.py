"""fp16 training: a step whose scaled gradients overflow updates nothing, and the learning-rate schedule does not
move either (no torch warning "``lr_scheduler.step()`` before ``optimizer.step()``" in ``make test``'s summary).

The GradScaler is made to start at 2**40 and to back off to 2**10 after one overflow: the first step of the run
overflows for sure (a loss times 2**40 is past fp16's range), the others do not.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model
from fh_utils.training import engine
from fh_utils.training.config import TrainConfig
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.scheduler import create_scheduler

SCHEDULER_WARNING = "lr_scheduler.step()"


def _fp16_available() -> bool:
    if torch.cuda.is_available():
        return True
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float16
    except (RuntimeError, ValueError):
        return False


@pytest.mark.skipif(not _fp16_available(), reason="fp16 autocast needs CUDA or CPU fp16 autocast")
def test_a_skipped_fp16_step_does_not_step_the_schedule_and_warns_nothing(demo_root, tmp_path, monkeypatch):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=32)  # 2 steps an epoch
    loaders["val"] = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=16, splits=("val",))["val"]
    assert len(loaders["train"]) == 2
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**40,
                                                                   backoff_factor=2.0**-30))  # fmt: skip
    counters = []
    counter_class = engine.UpdateCounter  # the name engine._setup reads
    monkeypatch.setattr(engine, "UpdateCounter", lambda opt: counters.append(counter_class(opt)) or counters[-1])
    cfg = dict(epochs=2, lr=2e-3, scheduler="warmup_cosine", warmup_epochs=0.5, seed=3, device=device, threads=1,
               amp="fp16")  # fmt: skip
    seed_everything(3)
    model = create_model("st2", "mobilenetv4_conv_small", img_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(model, loaders, tmp_path / "run", cfg, progress=False)
    assert not [str(w.message) for w in caught if SCHEDULER_WARNING in str(w.message)]
    assert counters[0].count == 3, "the first of the 4 steps overflowed: 3 updates"
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["scheduler"]["last_epoch"] == 3, "one scheduler step per update"
    assert last["scaler"]["scale"] == 2.0**10
    # The schedule as test_engine_losses computes it, counted in updates: epoch 1 ends after 1, epoch 2 after 3.
    factor = create_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3),
                              TrainConfig(**cfg), steps_per_epoch=2).lr_lambdas[0]  # fmt: skip
    assert result.history["lr"].tolist() == pytest.approx([2e-3 * factor(1), 2e-3 * factor(3)], rel=1e-12)
