"""Classifier re-training (cRT, Kang et al., 2020): after training, the heads re-learnt on a frozen backbone.

Decoupling representation and classifier: the representation learnt with the run's own sampling is kept and only
the classifier is re-trained with class-balanced sampling. Here (``TrainConfig.crt_epochs`` > 0, run by
:func:`fh_utils.training.fit` once training has ended):

- the starting weights are the run's submitted checkpoint (``TrainConfig.checkpoint``'s file: ``best.pt``,
  ``final.pt`` or ``averaged.pt``);
- every parameter outside ``model.heads`` is frozen and the whole model stays in eval mode but the heads, so the
  batch-norm running statistics do not move either: the backbone's weights and buffers end bit for bit as they
  started (dropout before the heads is off);
- the heads are re-initialised (as the paper does) and trained ``crt_epochs`` epochs on class-balanced batches
  (:func:`fh_utils.training.rebalance.balanced_loader`: each class of the sampler head equally often; ST1's other
  heads learn from the same batches) with the label-smoothed cross-entropy and nothing else (no logit adjustment,
  class weights or mixing: the sampler already balances), the run's optimiser at its ``lr`` decayed by a cosine to
  ``min_lr`` over the steps, the training augmentation, each epoch seeded from ``(seed, 10000 + epoch)``;
- the result is ``crt.pt`` (:data:`fh_utils.runs.CRT_CKPT`, the format of ``best.pt``: ``load_model`` reads it),
  scored on val like any checkpoint: ``metrics.json`` gets ``"crt"`` (score, per-head metrics, the cRT epochs'
  train loss) and ``val_crt.npz`` its val probabilities (:mod:`fh_utils.scoring.predictions`' format).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fh_utils.data.datasets import seed_epoch
from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.runs import BEST_CKPT, CHECKPOINT_FILES, CHECKPOINT_PREDICTIONS_FILE, CRT_CKPT, METRICS_FILE
from fh_utils.tasks import Task
from fh_utils.training.config import TrainConfig
from fh_utils.training.losses import MultiHeadLoss
from fh_utils.training.optim import create_optimizer
from fh_utils.training.rebalance import balanced_loader

log = logging.getLogger("fh_utils.train")

CRT_EPOCH_OFFSET = 10_000  # cRT epoch e is seeded from (seed, 10000 + e): no training epoch's draws repeat
CRT_KEY = "crt"  # its section of metrics.json


def _heads(model: nn.Module) -> nn.ModuleDict:
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        raise ValueError(f"classifier re-training needs a model with .heads (a ModuleDict), got {type(model).__name__}")
    return heads


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter outside ``model.heads``; the heads' parameters (left trainable) are returned."""
    head_ids = {id(p) for p in _heads(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)
    return [p for p in model.parameters() if id(p) in head_ids]


def reset_heads(model: nn.Module, seed: int) -> None:
    """Re-initialise every head (``reset_parameters``), reproducibly from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for head in _heads(model).values():
            head.reset_parameters()


def retrain_classifier(
    model: nn.Module,
    train_loader: DataLoader,
    cfg: TrainConfig,
    task: Task,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    reinit: bool = True,
) -> list[dict[str, float]]:
    """Re-train ``model``'s heads in place for ``cfg.crt_epochs`` epochs on the frozen backbone (see the module).

    Args:
        model: A task model (:class:`fh_utils.models.factory.FashionHowNet`) on ``device``.
        train_loader: The run's training loader; its class-balanced copy is drawn from.
        cfg: The run's training configuration (``crt_epochs``, optimiser, ``lr``, ``min_lr``, smoothing, seed).
        task: The task.
        device: Where ``model`` is.
        amp_dtype: Autocast dtype (None: fp32).
        channels_last: Feed channels_last batches (as the run did).
        progress: Show a progress bar.
        reinit: Re-initialise the heads first (the paper's cRT); False fine-tunes them.

    Returns:
        One row per cRT epoch: ``crt_epoch`` (1-based), ``train_loss``, ``lr`` (at the epoch's start).
    """
    if reinit:
        reset_heads(model, cfg.seed * 1000 + CRT_EPOCH_OFFSET)
    params = freeze_backbone(model)
    loader = balanced_loader(train_loader, task)
    opt = create_optimizer(model, cfg)  # only the trainable parameters: the heads'
    steps = max(1, cfg.crt_epochs * len(loader))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = MultiHeadLoss(task, replace(cfg, loss="ce")).to(device)
    rows = []
    for epoch in range(cfg.crt_epochs):
        seed_epoch(loader, cfg.seed, CRT_EPOCH_OFFSET + epoch)
        model.eval()  # frozen batch-norm statistics and no dropout ...
        _heads(model).train()  # ... while the heads learn
        lr = opt.param_groups[0]["lr"]
        total = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for x, y in tqdm(loader, desc=f"cRT {epoch + 1}/{cfg.crt_epochs}", leave=False, disable=not progress):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            schedule.step()
            total += loss.detach().to(total.dtype) * len(y)
            seen += len(y)
        rows.append({"crt_epoch": epoch + 1, "train_loss": float(total) / max(1, seen), "lr": lr})
        log.info("cRT epoch %d/%d loss %.4f lr %.2e", epoch + 1, cfg.crt_epochs, rows[-1]["train_loss"], lr)
    for p in params:
        p.requires_grad_(False)
    return rows


def crt_is_done(run_dir: str | Path, epochs: int) -> bool:
    """Whether the run already holds a finished cRT of ``epochs`` epochs (``crt.pt`` and its metrics.json entry)."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
    return (run_dir / CRT_CKPT).is_file() and (metrics.get(CRT_KEY) or {}).get("epochs") == epochs


def retrain_after_fit(
    loop: Any,
    state: Any,
    loaders: dict[str, DataLoader],
    run_dir: Path,
    evaluate: Callable[..., dict],
    epoch_record: Callable[..., Any],
) -> dict[str, Any]:
    """Re-train the classifier of a run whose training has ended: ``crt.pt``, ``val_crt.npz``, ``metrics.json``.

    Called by :func:`fh_utils.training.fit` (``loop`` and ``state`` are its loop and
    :class:`~fh_utils.training.checkpoint.TrainingState`), which also passes its ``evaluate`` and the maker of its
    stored val predictions (this module never imports the engine); the run's own model and files are left as
    they are.
    """
    cfg, task, device = loop.cfg, loop.task, loop.device
    source = run_dir / CHECKPOINT_FILES.get(cfg.checkpoint, BEST_CKPT)
    model = copy.deepcopy(state.model)
    if source.is_file():
        model.load_state_dict(torch.load(source, map_location=device, weights_only=True)["model"])
    else:  # the rule's file is missing (never expected): the weights the run evaluates
        source = Path("(in memory)")
        model.load_state_dict(state.eval_model.state_dict())
    history = retrain_classifier(model, loaders["train"], cfg, task, device, loop.amp_dtype, loop.channels_last,
                                 loop.progress)  # fmt: skip
    entry: dict[str, Any] = {"file": CRT_CKPT, "source": source.name, "epochs": cfg.crt_epochs, "reinit": True,
                             "score": None, "history": history}  # fmt: skip
    val_loader = loaders.get("val")
    if val_loader is not None:
        val = evaluate(model, val_loader, task, device, loop.amp_dtype, progress=loop.progress,
                       criterion=loop.criterion)  # fmt: skip
        entry.update(score=val["score"], loss=val["loss"], heads=val["heads"],
                     predictions=CHECKPOINT_PREDICTIONS_FILE.format(rule=CRT_KEY))  # fmt: skip
        record = epoch_record(run_dir, val_loader.dataset, task, state).first(0)
        record.append(cfg.crt_epochs, val["probabilities"]).save(run_dir / entry["predictions"])
        msg = f"cRT ({cfg.crt_epochs} epochs on the frozen backbone of {source.name}): val {task.metric} "
        log.info(msg + f"{val['score']:.4f}")
        if loop.progress:
            tqdm.write(msg + f"{val['score']:.4f}")
    weights = {"model": model.state_dict(), "model_config": getattr(state.model, "model_config", {}),
               "epoch": state.epoch, "best_score": entry["score"] if entry["score"] is not None else math.nan,
               "crt_epochs": cfg.crt_epochs}  # fmt: skip
    atomic_write(run_dir / CRT_CKPT, lambda tmp: torch.save(weights, tmp))
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    write_json(metrics_path, {**metrics, CRT_KEY: entry})
    return entry
