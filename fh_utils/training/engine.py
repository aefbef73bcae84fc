"""One training engine for every task: :func:`fit`, :func:`evaluate`, :func:`predict`.

The loop is driven by the task description (heads, metric), runs on CUDA, MPS or CPU, and writes everything
into one run folder (see :mod:`fh_utils.runs`). Each epoch's randomness is seeded from ``(seed, epoch)`` and
``last.pt`` holds the whole training state, so ``fit(..., resume=True)`` after an interruption replays the
remaining epochs exactly as an uninterrupted run would (bit for bit on CPU).

What the loop is made of lives beside it: the losses (:mod:`~fh_utils.training.losses`), the optimiser
(:mod:`~fh_utils.training.optim`), the learning-rate schedule (:mod:`~fh_utils.training.scheduler`), the saved
state (:mod:`~fh_utils.training.checkpoint`) and the device and precision (:mod:`~fh_utils.training.device`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fh_utils.data.datasets import seed_epoch
from fh_utils.io import TMP_SUFFIX, atomic_write
from fh_utils.runs import (
    AVERAGED_CKPT,
    BEST_CKPT,
    CHECKPOINT_FILES,
    CHECKPOINT_PREDICTIONS_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EPOCH_PREDICTIONS_FILE,
    FINAL_CKPT,
    LAST_CKPT,
    METRICS_FILE,
    read_json,
    write_history,
    write_json,
)  # fmt: skip
from fh_utils.tasks import Task, get_task
from fh_utils.training.checkpoint import TrainingState
from fh_utils.training.config import TrainConfig
from fh_utils.training.device import amp_dtype, resolve_device, set_threads, sum_dtype, uses_channels_last
from fh_utils.training.losses import MultiHeadLoss
from fh_utils.training.metrics import task_metrics
from fh_utils.training.mixing import create_mixer, mixed_loss
from fh_utils.training.optim import create_optimizer
from fh_utils.training.rebalance import Rebalancer
from fh_utils.training.scheduler import UpdateCounter, create_scheduler, step_scheduler

log = logging.getLogger("fh_utils.train")

# Steps between progress-bar updates of fit; each update reads the running loss and top-1 from the device (a
# host-device sync), the only read inside an epoch (none with progress=False).
PROGRESS_EVERY = 25


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call before :func:`fh_utils.models.create_model` for a reproducible init."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    task: Task | str,
    device: str | torch.device = "auto",
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    criterion: nn.Module | None = None,
) -> dict:
    """Score ``model`` on a labelled loader.

    Returns:
        :func:`fh_utils.training.metrics.task_metrics` output plus ``"loss"`` (when ``criterion`` is given),
        ``"targets"`` and ``"predictions"`` (``(N, n_heads)`` arrays) and ``"probabilities"``
        (``{column: (N, C)}``).
    """
    task = get_task(task) if isinstance(task, str) else task
    device = resolve_device(device) if isinstance(device, str) else device
    model.eval()
    preds, targets, probs = [], [], {h.column: [] for h in task.heads}
    loss_sum, n = torch.zeros((), dtype=sum_dtype(device), device=device), 0
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            out = model(x)
        if criterion is not None:
            loss_sum += criterion(out, y).to(loss_sum.dtype) * len(y)
        n += len(y)
        # Kept on the device and copied once after the last batch: no host-device sync per batch.
        preds.append(torch.stack([out[h.column].argmax(1) for h in task.heads], 1))
        targets.append(y)
        for h in task.heads:
            probs[h.column].append(out[h.column].float().softmax(1))
    y_true, y_pred = torch.cat(targets).cpu().numpy(), torch.cat(preds).cpu().numpy()
    result = task_metrics(task, y_true, y_pred)
    if criterion is not None:
        result["loss"] = float(loss_sum) / max(1, n)
    result.update(targets=y_true, predictions=y_pred,
                  probabilities={k: torch.cat(v).cpu().numpy() for k, v in probs.items()})  # fmt: skip
    return result


def _run_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _strip_arrays(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("targets", "predictions", "probabilities")}


EpochCallback = Callable[[dict], None]


@dataclass
class FitResult:
    """What :func:`fit` returns: the run folder, per-epoch history and the best epoch's metrics."""

    run_dir: Path
    history: pd.DataFrame
    metrics: dict
    model: nn.Module


@dataclass
class _Loop:
    """The fixed parts of one :func:`fit` call (device, precision, loss), shared by its helpers."""

    cfg: TrainConfig
    task: Task
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    criterion: nn.Module
    step_model: nn.Module
    progress: bool
    teacher: nn.Module | None = None  # frozen, never part of the saved state (fh_utils.training.distill)
    distill: nn.Module | None = None
    updates: UpdateCounter | None = None  # the optimizer's updates (a skipped fp16 step makes none)
    rebalance: Rebalancer | None = None  # deferred re-balancing: each epoch's loader and class weights

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()


def fit(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    run_dir: str | Path,
    config: TrainConfig | dict | None = None,
    resume: bool = False,
    progress: bool = True,
    task: Task | str | None = None,
    class_priors: dict[str, torch.Tensor] | None = None,
    sections: dict[str, dict] | None = None,
    extra_metrics: dict | None = None,
    callbacks: list[EpochCallback] | None = None,
    teacher: Any = None,
    **overrides: Any,
) -> FitResult:
    """Train ``model`` on ``loaders["train"]``, evaluating on ``loaders["val"]`` after every epoch.

    Without a ``"val"`` loader (a full fit on train + val) every epoch is trained, ``best.pt`` holds the last
    epoch's weights and ``metrics.json`` says there was no validation (``"score": null``).

    Args:
        model: From :func:`fh_utils.models.create_model` (its ``model_config`` names the task).
        loaders: ``"train"`` and optionally ``"val"`` (from :func:`fh_utils.data.create_loaders`).
        run_dir: Run folder (from :func:`fh_utils.runs.create_run_dir`).
        config: Training configuration (a :class:`TrainConfig` or a dict of its fields).
        resume: Continue from ``run_dir/last.pt`` when it exists.
        progress: Show tqdm progress bars.
        task: Task description (default: the one the model was built for).
        class_priors: Training class frequencies per head (:func:`fh_utils.training.losses.class_priors`);
            needed by ``loss="logit_adjust"``.
        sections: More sections of ``config.json`` (e.g. ``{"data": ..., "run": ...}``); a ``"model"`` section
            (the model's settings, :class:`fh_utils.models.config.ModelConfig`) gets the model's own record
            (its ``model_config``) merged over it.
        extra_metrics: Merged into ``metrics.json`` (e.g. the colour baseline's score).
        callbacks: Called with each epoch's history row after it is saved; a callback may raise to stop
            the run (``optuna.TrialPruned``), which leaves ``last.pt`` valid.
        teacher: Distil from this teacher (:func:`fh_utils.training.distill.build_teacher`: run folders, a
            comma-separated string of them, ``"<timm name>@<weights file>"``, or models; several make an ensemble
            teacher). It runs online in eval mode on each augmented batch; the loss becomes
            ``(1 - distill_alpha) * CE + distill_alpha * T**2 * KL`` and ``history.csv`` gets ``train_ce`` and
            ``train_kd``. The teacher is rebuilt on resume and never saved with the student.
        **overrides: Fields of :class:`TrainConfig` overriding ``config`` (an unknown name is an error).

    Returns:
        A :class:`FitResult`; ``run_dir`` then holds ``config.json``, ``history.csv``, ``metrics.json``,
        ``best.pt``, ``last.pt`` and ``train.log``, ``state.json`` (the run's state) and ``tb/`` (TensorBoard
        scalars; :mod:`fh_utils.training.watch`).
    """
    cfg, task = resolve_training(model, config, overrides, task, class_priors)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(run_dir)
    device = resolve_device(cfg.device)
    threads = set_threads(loaders["train"].num_workers, cfg.threads or None) if device.type == "cpu" else None
    handler = _run_logger(run_dir)
    try:
        loop, state = _setup(model, loaders["train"], cfg, task, device, class_priors, progress)
        if teacher is not None and not (isinstance(teacher, (str, list, tuple)) and len(teacher) == 0):
            _setup_distillation(loop, teacher, model)
            sections = {**(sections or {}), "teacher": loop.teacher.describe()}
        last_path = run_dir / LAST_CKPT
        if resume and last_path.exists():
            state.load(last_path, device)
            log.info("resumed from %s at epoch %d", last_path, state.epoch + 1)
            _warn_if_teacher_dropped(run_dir, loop)
        runtime = {"device": str(device), "amp_dtype": str(loop.amp_dtype), "channels_last": loop.channels_last,
                   "torch_threads": threads, "train_rows": len(loaders["train"].dataset),
                   "val_rows": len(loaders["val"].dataset) if "val" in loaders else 0}  # fmt: skip
        write_json(
            run_dir / CONFIG_FILE,
            {
                **(sections or {}),
                "task": task.to_dict(),
                "train": cfg.to_dict(),
                "model": {**(sections or {}).get("model", {}), **getattr(model, "model_config", {})},
                "runtime": runtime,
            },
        )
        from fh_utils.training.watch import RunWatch  # state.json and TensorBoard scalars (tb/) of the run

        with RunWatch(run_dir, state.history, cfg.epochs, extra_metrics) as watch:
            epochs_before = state.epoch
            _train_epochs(loop, state, loaders, run_dir, extra_metrics or {}, [watch.on_epoch, *(callbacks or [])])
            _save_rule_checkpoint(loop, state, loaders, run_dir)
            if cfg.crt_epochs:  # classifier re-training from the rule's checkpoint: crt.pt (fh_utils.training.crt)
                from fh_utils.training.crt import crt_is_done, retrain_after_fit

                # A finished run resumed again trains nothing new: its cRT (seeded, so the same) is not redone.
                if state.epoch > epochs_before or not crt_is_done(run_dir, cfg.crt_epochs):
                    retrain_after_fit(loop, state, loaders, run_dir, evaluate, _epoch_record)
    finally:
        log.removeHandler(handler)
        handler.close()
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
    return FitResult(run_dir, pd.DataFrame(state.history), metrics, model)


def _remove_stale_tmp(run_dir: Path) -> None:
    # A process killed inside atomic_write leaves its temporary file (".last.pt.<random>.tmp"): never read,
    # but it holds a checkpoint's worth of disk and would pile up over many interruptions.
    for stale in run_dir.glob(f".*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _setup_distillation(loop: _Loop, teacher: Any, student: nn.Module) -> None:
    from fh_utils.training.distill import DistillationLoss, build_teacher

    loop.teacher = build_teacher(teacher, loop.task, student, loop.device)
    if loop.channels_last:
        loop.teacher = loop.teacher.to(memory_format=torch.channels_last)
    loop.distill = DistillationLoss(loop.criterion, loop.cfg.distill_alpha, loop.cfg.distill_temperature)
    log.info("distilling from %s (alpha %g, T %g)", ", ".join(loop.teacher.sources), loop.cfg.distill_alpha,
             loop.cfg.distill_temperature)  # fmt: skip


def _warn_if_teacher_dropped(run_dir: Path, loop: _Loop) -> None:
    # The teacher is not in last.pt (only the student is saved): a resume must be given it again.
    before = read_json(run_dir / CONFIG_FILE).get("teacher") if (run_dir / CONFIG_FILE).exists() else None
    if before and loop.teacher is None:
        log.warning(
            "this run was distilled from %s; resuming without a teacher trains on labels only from here "
            "(pass the same teacher to continue the distillation)",
            ", ".join(before.get("members", [])),
        )


def resolve_training(model: nn.Module, config: TrainConfig | dict | None, overrides: dict[str, Any],
                     task: Task | str | None, class_priors: Any) -> tuple[TrainConfig, Task]:  # fmt: skip
    """The training configuration (``config`` with ``overrides``) and the task, as :func:`fit` takes them.

    Shared with the LR finder. ``loss="logit_adjust"`` without ``class_priors`` is an error.
    """
    base = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    cfg = TrainConfig.from_dict({**base, **overrides})
    if cfg.loss == "logit_adjust" and class_priors is None:
        raise ValueError("loss='logit_adjust' needs class_priors: pass "
                         "fh_utils.training.losses.class_priors(train targets, task)")  # fmt: skip
    return cfg, resolve_task(model, task)


def resolve_task(model: nn.Module, task: Task | str | None) -> Task:
    """``task`` as a :class:`Task` (a name is looked up); None: the task the model was built for."""
    if isinstance(task, Task):
        return task
    if task is not None:
        return get_task(task)
    from fh_utils.models.factory import task_of_model

    return task_of_model(model)


def _setup(model, train_loader, cfg: TrainConfig, task: Task, device, priors, progress) -> tuple[_Loop, TrainingState]:
    from timm.utils import ModelEmaV3

    dtype = amp_dtype(cfg, device)
    channels_last = uses_channels_last(cfg, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    opt = create_optimizer(model, cfg)
    state = TrainingState(model, opt, create_scheduler(opt, cfg, len(train_loader)),
                          torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), ema)  # fmt: skip
    criterion = MultiHeadLoss(task, cfg, priors).to(device)
    step_model = torch.compile(model) if cfg.compile else model
    loop = _Loop(cfg, task, device, dtype, channels_last, criterion, step_model, progress,
                 updates=UpdateCounter(opt), rebalance=Rebalancer(cfg, task, train_loader, device))  # fmt: skip
    return loop, state


def _train_one_epoch(loop: _Loop, state: TrainingState, loader: DataLoader) -> dict:
    cfg, task = loop.cfg, loop.task
    if loop.rebalance is not None:  # DRS / DRW: a function of the epoch alone, so a resumed run switches alike
        loader = loop.rebalance.loader(loader, state.epoch)
        loop.criterion.class_weights = loop.rebalance.class_weights(loader, state.epoch)
    mixer = create_mixer(cfg, state.epoch)  # CutMix / mixup of the uint8 batch, drawn from (seed, epoch)
    seed_epoch(loader, cfg.seed, state.epoch)
    state.model.train()
    start = time.perf_counter()
    # The epoch's running sums stay on the device and are read once, at its end (and by the progress bar every
    # PROGRESS_EVERY steps): reading a device value every step makes the host wait for the GPU every batch.
    # Summed in float64 with the operations of the Python sums they replace, so the logged values are unchanged.
    names = ["train_loss", "train_top1", *(["train_ce", "train_kd"] if loop.distill is not None else [])]
    sums = torch.zeros(len(names), dtype=sum_dtype(loop.device), device=loop.device)
    seen = 0
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", leave=False, disable=not loop.progress)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
        x, mix = mixer(x, y) if mixer is not None else (x, None)
        if loop.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if loop.teacher is not None:
            with torch.inference_mode(), loop.autocast():
                soft = loop.teacher.probabilities(x, loop.cfg.distill_temperature)
            soft = {k: v.clone() for k, v in soft.items()}  # inference tensors cannot be saved for backward
        with loop.autocast():
            out = loop.step_model(x)
            if loop.distill is not None:  # a mixed batch: lam * loss(y) + (1 - lam) * loss(y of its partners)
                loss, hard_term, soft_term = mixed_loss(loop.distill, out, y, mix, soft)
            else:
                loss = mixed_loss(loop.criterion, out, y, mix)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
        updates = loop.updates.count
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if loop.updates.count > updates:  # not when the GradScaler skipped the update (fp16 overflow): UpdateCounter
            step_scheduler(state.scheduler, cfg, state.epoch, i, len(loader))
        if state.ema is not None:
            state.ema.update(state.model, step=state.epoch * len(loader) + i)
        with torch.no_grad():
            hits = torch.stack([(out[h.column].argmax(1) == y[:, j]).float().mean() for j, h in enumerate(task.heads)])
            parts = [loss.detach(), hits.to(sums.dtype).sum() / len(task.heads)]  # mean top-1 over the heads
            if loop.distill is not None:
                parts += [hard_term.detach(), soft_term.detach()]
            sums += torch.stack([p.to(sums.dtype) for p in parts]) * len(y)
            seen += len(y)
        if loop.progress and (i + 1) % PROGRESS_EVERY == 0:
            loss_now, top1_now = (sums[:2] / seen).tolist()
            bar.set_postfix(loss=f"{loss_now:.4f}", top1=f"{top1_now:.3f}")
    means = dict(zip(names, (sums / max(1, seen)).tolist()))  # the epoch's one read: it waits for the last step
    seconds = time.perf_counter() - start
    row = {"epoch": state.epoch + 1, "lr": state.optimizer.param_groups[0]["lr"], "train_loss": means.pop("train_loss"),
           "train_top1": means.pop("train_top1"), "train_img_per_s": seen / max(seconds, 1e-9)}  # fmt: skip
    row.update(means)  # with a teacher: both terms of the distillation loss, before the alpha weighting
    if loop.rebalance is not None and loop.rebalance.mode != "none":
        loop.criterion.class_weights = None  # the validation loss is never weighted
        row["rebalanced"] = float(loop.rebalance.active(state.epoch))  # 1 from the first re-balanced epoch
    return row


def _epoch_record(run_dir: Path, dataset: Any, task: Task, state: TrainingState):
    """The stored per-epoch val predictions to extend: the file's first epochs on a resume, else a new record."""
    from fh_utils.scoring.predictions import EpochPredictions

    path = run_dir / EPOCH_PREDICTIONS_FILE
    if state.epoch > 0 and path.exists():
        return EpochPredictions.load(path).first(state.epoch)
    df = dataset.df
    n = len(df)
    source = df["source"].to_numpy() if "source" in df else ["val"] * n
    row = df["row"].to_numpy() if "row" in df else np.arange(n)
    return EpochPredictions.start({h.column: np.zeros(h.num_classes) for h in task.heads}, dataset.targets,
                                  df["image_name"].to_numpy(), source, row)  # fmt: skip


def epoch_checkpoint(run_dir: str | Path, epoch: int) -> Path:
    """``checkpoints/epoch_NNN.pt`` of a run: the weights after that epoch (1-based), while it is kept."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"epoch_{epoch:03d}.pt"


def _keep_epoch_weights(run_dir: Path, state: TrainingState, keep: int) -> None:
    # The last `keep` epochs' weights, for weight averaging; older ones are removed once the new one is written.
    if keep <= 0:
        return
    state.save_weights(epoch_checkpoint(run_dir, state.epoch + 1))
    for old in sorted((run_dir / CHECKPOINTS_DIR).glob("epoch_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def _train_epochs(loop: _Loop, state: TrainingState, loaders, run_dir: Path, extra_metrics: dict, callbacks) -> None:
    cfg, task = loop.cfg, loop.task
    val_loader = loaders.get("val")
    record = _epoch_record(run_dir, val_loader.dataset, task, state) if val_loader is not None else None
    while state.epoch < cfg.epochs:
        start = time.perf_counter()
        row = _train_one_epoch(loop, state, loaders["train"])
        if val_loader is not None:
            val = evaluate(state.eval_model, val_loader, task, loop.device, loop.amp_dtype, progress=loop.progress,
                           criterion=loop.criterion)  # fmt: skip
            row["val_loss"] = val["loss"]
            for column, head in val["heads"].items():
                row[f"val_{column}_top1"], row[f"val_{column}_acsa"] = head["top1"], head["acsa"]
            row["val_score"] = val["score"]
            improved = val["score"] > state.best_score
            record = record.append(state.epoch + 1, val["probabilities"])
            record.save(run_dir / EPOCH_PREDICTIONS_FILE)
        else:
            val, improved = None, True  # a full fit keeps its last epoch
        row["seconds"] = time.perf_counter() - start
        state.history.append(row)
        if improved:
            state.best_epoch, state.bad_epochs = state.epoch + 1, 0
            state.best_score = val["score"] if val is not None else math.nan
            if val is not None:
                metrics = {"score": val["score"], "metric": task.metric, "task": task.name, "epoch": state.epoch + 1,
                           "validation": "val", **_strip_arrays(val), **extra_metrics}  # fmt: skip
            else:
                metrics = {"score": None, "metric": task.metric, "task": task.name, "epoch": state.epoch + 1,
                           "validation": "none", "note": "full fit on train + val: no held-out score",
                           **extra_metrics}  # fmt: skip
            state.save_weights(run_dir / BEST_CKPT)
            write_json(run_dir / METRICS_FILE, metrics)
        else:
            state.bad_epochs += 1
        _keep_epoch_weights(run_dir, state, cfg.keep_epochs)
        state.save(run_dir / LAST_CKPT)
        write_history(run_dir, state.history)
        _log_epoch(loop, row, improved)
        state.epoch += 1
        for callback in callbacks:
            callback(dict(row))
        if cfg.early_stopping and state.bad_epochs >= cfg.early_stopping:
            log.info("early stopping: no improvement for %d epochs", state.bad_epochs)
            break


def _save_rule_checkpoint(loop: _Loop, state: TrainingState, loaders: dict, run_dir: Path) -> dict:
    """Save what the rule submits once the last epoch is done, and record it.

    ``final.pt`` (the last epoch's weights) always; the weight average when the rule asks for it; and
    ``metrics.json``'s ``"checkpoint"``: the rule, its file, its epoch(s) and its val score.
    """
    cfg = loop.cfg
    state.save_weights(run_dir / FINAL_CKPT)
    entry: dict[str, Any] = {"rule": cfg.checkpoint, "file": CHECKPOINT_FILES[cfg.checkpoint]}
    if cfg.checkpoint == "best":
        entry.update(epoch=state.best_epoch, score=state.best_score if math.isfinite(state.best_score) else None)
    elif cfg.checkpoint == "last":
        entry.update(epoch=state.epoch, score=(state.history[-1] if state.history else {}).get("val_score"))
    else:
        entry.update(_save_weight_average(loop, state, loaders, run_dir))
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    write_json(metrics_path, {**metrics, "checkpoint": entry})
    return entry


def _save_weight_average(loop: _Loop, state: TrainingState, loaders: dict, run_dir: Path) -> dict:
    from fh_utils.training.averaging import average_state_dicts, recompute_batchnorm

    paths = sorted((run_dir / CHECKPOINTS_DIR).glob("epoch_*.pt"))[-loop.cfg.keep_epochs :]
    epochs = [int(p.stem.split("_")[1]) for p in paths]
    model = copy.deepcopy(state.eval_model)
    model.load_state_dict(average_state_dicts(paths))
    train = loaders["train"]
    if loop.rebalance is not None:  # DRS: the averaged epochs drew class-balanced batches, and so does this pass
        train = loop.rebalance.loader(train, max(0, state.epoch - 1))
    seed_epoch(train, loop.cfg.seed, state.epoch)  # the pass that re-estimates batch-norm replays
    recomputed = recompute_batchnorm(model, train, loop.device)
    weights = {"model": model.state_dict(), "model_config": getattr(state.model, "model_config", {}),
               "epoch": state.epoch, "averaged_epochs": epochs}  # fmt: skip
    atomic_write(run_dir / AVERAGED_CKPT, lambda tmp: torch.save(weights, tmp))
    entry: dict[str, Any] = {"epochs": epochs, "batchnorm_recomputed": recomputed, "score": None}
    val_loader = loaders.get("val")
    if val_loader is not None:
        val = evaluate(model, val_loader, loop.task, loop.device, loop.amp_dtype, progress=loop.progress)
        entry["score"] = val["score"]
        record = _epoch_record(run_dir, val_loader.dataset, loop.task, state).first(0)
        record.append(state.epoch, val["probabilities"]).save(run_dir / CHECKPOINT_PREDICTIONS_FILE.format(rule="avg"))
        log.info("weight average of epochs %s: val %s %.4f", epochs, loop.task.metric, val["score"])
    return entry


def _log_epoch(loop: _Loop, row: dict, improved: bool) -> None:
    score = f"score {row['val_score']:.4f}{' *' if improved else ''} " if "val_score" in row else ""
    val_loss = f"val_loss {row['val_loss']:.4f} " if "val_loss" in row else ""
    msg = (f"epoch {row['epoch']}/{loop.cfg.epochs} loss {row['train_loss']:.4f} {val_loss}{score}"
           f"lr {row['lr']:.2e} {row['train_img_per_s']:.1f} img/s {row['seconds']:.0f}s")  # fmt: skip
    log.info(msg)
    if loop.progress:
        tqdm.write(msg)


@torch.inference_mode()
def predict(
    model: nn.Module,
    loader: DataLoader,
    task: Task | str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    return_probabilities: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict every row of ``loader`` (unshuffled) and return the official submission DataFrame.

    Returns:
        DataFrame in the CSV's row order with columns ``image_name`` and one per head (ST1 ``daily, gender,
        embel``; ST2 ``color``); with ``return_probabilities`` also ``{column: (N, C) probabilities}``.
    """
    dataset = loader.dataset
    task = dataset.task if task is None else (get_task(task) if isinstance(task, str) else task)
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.to(device).eval()
    probs: dict[str, list] = {h.column: [] for h in task.heads}
    for x, _ in tqdm(loader, desc="predict", leave=False, disable=not progress):
        out = model(x.to(device))
        for h in task.heads:
            probs[h.column].append(out[h.column].float().softmax(1).cpu())
    arrays = {k: torch.cat(v).numpy() for k, v in probs.items()}
    frame = pd.DataFrame({"image_name": dataset.df["image_name"].to_numpy()})
    for h in task.heads:
        frame[h.key] = arrays[h.column].argmax(1).astype(np.int64)
    return (frame, arrays) if return_probabilities else frame
