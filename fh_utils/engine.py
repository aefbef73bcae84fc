"""One training engine for every task: :func:`fit`, :func:`evaluate`, :func:`predict`.

The loop is driven by the task description (heads, metric), runs on CUDA, MPS or CPU, and writes everything
into one run folder (see :mod:`fh_utils.runs`). Each epoch's randomness is seeded from ``(seed, epoch)`` and
``last.pt`` holds the whole training state, so ``fit(..., resume=True)`` after an interruption replays the
remaining epochs exactly as an uninterrupted run would (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fh_utils.datasets import IMBALANCE_MODES, seed_epoch
from fh_utils.metrics import task_metrics
from fh_utils.runs import (
    BEST_CKPT,
    CONFIG_FILE,
    LAST_CKPT,
    METRICS_FILE,
    atomic_write,
    read_json,
    write_history,
    write_json,
)  # fmt: skip
from fh_utils.tasks import Task, get_task

log = logging.getLogger("fh_utils.train")

OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("cosine_restarts", "warmup_cosine", "none")


@dataclass
class TrainConfig:
    """Everything that defines a training run besides the model and data (saved in ``config.json``).

    Defaults are the seed's recipe (Myungbin, 2nd place): AdamW, CosineAnnealingWarmRestarts(T_0=30,
    T_mult=2), label smoothing 0.1, AMP on GPU.
    """

    epochs: int = 30
    lr: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    scheduler: str = "cosine_restarts"
    t_0: int = 30
    t_mult: int = 2
    warmup_epochs: float = 1.0
    min_lr: float = 1e-7
    label_smoothing: float = 0.1
    head_weights: dict[str, float] | None = None
    imbalance: str = "none"
    logit_adjust_tau: float = 1.0
    grad_clip: float | None = None
    ema: bool = False
    ema_decay: float = 0.999
    early_stopping: int | None = None
    amp: str = "auto"
    channels_last: str | bool = "auto"
    compile: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    color_baseline: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.imbalance not in IMBALANCE_MODES:
            raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {self.imbalance!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, putting unknown keys (data parameters, notes) into ``extra``."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names}
        known.setdefault("extra", {}).update(extra)
        return cls(**known)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call before :func:`fh_utils.models.create_model` for a reproducible init."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(num_workers: int, threads: int | None = None) -> int:
    """Give torch the cores the data workers leave free (two busy processes on 2 cores slow torch 4x)."""
    cores = os.cpu_count() or 1
    n = threads or max(1, cores - num_workers)
    torch.set_num_threads(n)
    return n


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def class_priors(loader: DataLoader, task: Task) -> dict[str, torch.Tensor]:
    """Training class frequencies of every head (for logit adjustment)."""
    targets = loader.dataset.targets
    priors = {}
    for j, head in enumerate(task.heads):
        counts = np.bincount(targets[:, j], minlength=head.num_classes).astype(np.float64) + 1e-3
        priors[head.column] = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    return priors


def logit_adjusted_loss(
    logits: torch.Tensor, target: torch.Tensor, prior: torch.Tensor, tau: float = 1.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Logit-adjusted cross-entropy (Menon et al., 2021): CE on ``logits + tau * log(prior)``.

    Training against prior-shifted logits makes the raw logits estimate the balanced posterior, so predicting
    with the raw logits maximises mean per-class accuracy. ``tau=1`` equals the balanced softmax loss.
    """
    return F.cross_entropy(logits + tau * prior.log().to(logits), target, label_smoothing=label_smoothing)


class MultiHeadLoss(nn.Module):
    """Sum over heads of (optionally logit-adjusted) cross-entropy, with per-head weights."""

    def __init__(self, task: Task, cfg: TrainConfig, priors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.task = task
        self.smoothing = cfg.label_smoothing
        self.weights = {h.column: float((cfg.head_weights or {}).get(h.column, 1.0)) for h in task.heads}
        self.priors = priors if cfg.imbalance == "logit_adjust" else None
        self.tau = cfg.logit_adjust_tau

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the heads' losses; ``targets`` is ``(B, n_heads)``."""
        total = 0.0
        for j, head in enumerate(self.task.heads):
            logits, y = outputs[head.column].float(), targets[:, j]
            if self.priors is not None:
                loss = logit_adjusted_loss(logits, y, self.priors[head.column], self.tau, self.smoothing)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
            total = total + self.weights[head.column] * loss
        return total


def _create_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters, as timm's optimizer factory does.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _create_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.t_0, T_mult=cfg.t_mult,
                                                                    eta_min=cfg.min_lr)  # fmt: skip
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if cfg.scheduler == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _step_scheduler(sched, cfg: TrainConfig, epoch: int, i: int, n: int) -> None:
    if cfg.scheduler == "cosine_restarts":
        sched.step(epoch + (i + 1) / n)  # fractional epochs, as the seed stepped it
    else:
        sched.step()


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate()[1],
    }


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
        :func:`fh_utils.metrics.task_metrics` output plus ``"loss"`` (when ``criterion`` is given),
        ``"targets"`` and ``"predictions"`` (``(N, n_heads)`` arrays) and ``"probabilities"``
        (``{column: (N, C)}``).
    """
    task = get_task(task) if isinstance(task, str) else task
    device = resolve_device(device) if isinstance(device, str) else device
    model.eval()
    preds, targets, probs = [], [], {h.column: [] for h in task.heads}
    loss_sum, n = 0.0, 0
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            out = model(x)
        if criterion is not None:
            loss_sum += float(criterion(out, y)) * len(y)
        n += len(y)
        preds.append(torch.stack([out[h.column].argmax(1) for h in task.heads], 1).cpu())
        targets.append(y.cpu())
        for h in task.heads:
            probs[h.column].append(out[h.column].float().softmax(1).cpu())
    y_true, y_pred = torch.cat(targets).numpy(), torch.cat(preds).numpy()
    result = task_metrics(task, y_true, y_pred)
    if criterion is not None:
        result["loss"] = loss_sum / max(1, n)
    result.update(targets=y_true, predictions=y_pred, probabilities={k: torch.cat(v).numpy() for k, v in probs.items()})
    return result


def _run_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _strip_arrays(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("targets", "predictions", "probabilities")}


@dataclass
class FitResult:
    """What :func:`fit` returns: the run folder, per-epoch history and the best epoch's metrics."""

    run_dir: Path
    history: pd.DataFrame
    metrics: dict
    model: nn.Module


def fit(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    run_dir: str | Path,
    config: TrainConfig | dict | None = None,
    resume: bool = False,
    progress: bool = True,
    run_config: dict | None = None,
    **overrides: Any,
) -> FitResult:
    """Train ``model`` on ``loaders["train"]``, evaluating on ``loaders["val"]`` after every epoch.

    Args:
        model: From :func:`fh_utils.models.create_model`.
        loaders: From :func:`fh_utils.datasets.create_loaders` (``"train"`` and ``"val"``).
        run_dir: Run folder (from :func:`fh_utils.runs.create_run_dir`).
        config: Training configuration (a :class:`TrainConfig` or a dict of its fields).
        resume: Continue from ``run_dir/last.pt`` when it exists.
        progress: Show tqdm progress bars.
        run_config: Extra entries (data parameters) written into ``config.json`` beside the training ones.
        **overrides: Fields of :class:`TrainConfig` overriding ``config``.

    Returns:
        A :class:`FitResult`; ``run_dir`` then holds ``config.json``, ``history.csv``, ``metrics.json``,
        ``best.pt``, ``last.pt`` and ``train.log``.
    """
    base = asdict(config) if isinstance(config, TrainConfig) else dict(config or {})
    cfg = TrainConfig.from_dict({**base, **overrides})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = loaders["train"].dataset.task
    device = resolve_device(cfg.device)
    threads = set_threads(loaders["train"].num_workers, cfg.threads) if device.type == "cpu" else None
    handler = _run_logger(run_dir)
    try:
        return _fit(model, loaders, run_dir, cfg, task, device, threads, resume, progress, run_config or {})
    finally:
        log.removeHandler(handler)
        handler.close()


def _fit(model, loaders, run_dir, cfg, task, device, threads, resume, progress, run_config) -> FitResult:
    from timm.utils import ModelEmaV3

    train_loader, val_loader = loaders["train"], loaders["val"]
    amp_dtype = _amp_dtype(cfg, device)
    channels_last = device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    opt = _create_optimizer(model, cfg)
    sched = _create_scheduler(opt, cfg, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = MultiHeadLoss(task, cfg, class_priors(train_loader, task)).to(device)
    step_model = torch.compile(model) if cfg.compile else model

    history: list[dict] = []
    best_score, best_epoch, start_epoch, bad_epochs = -math.inf, -1, 0, 0
    baseline = None
    last_path = run_dir / LAST_CKPT
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"]) + 1
        best_score, best_epoch, bad_epochs = ckpt["best_score"], ckpt["best_epoch"], ckpt["bad_epochs"]
        baseline = ckpt.get("baseline")
        log.info("resumed from %s at epoch %d", last_path, start_epoch)

    config_out = {**run_config, **asdict(cfg), "task": task.name, "task_spec": task.to_dict(),
                  "model": getattr(model, "model_config", {}), "data": getattr(model, "data_config", {}),
                  "device": str(device), "amp_dtype": str(amp_dtype), "channels_last": channels_last,
                  "torch_threads": threads, "train_rows": len(train_loader.dataset),
                  "val_rows": len(val_loader.dataset)}  # fmt: skip
    write_json(run_dir / CONFIG_FILE, config_out)

    use_baseline = cfg.color_baseline if cfg.color_baseline is not None else task.name == "st2"
    if use_baseline and baseline is None:
        from fh_utils.baseline import baseline_for_loaders

        base_res = baseline_for_loaders(loaders, task, progress=progress)
        per_class = [None if np.isnan(a) else float(a) for a in base_res.per_class]
        baseline = {"score": base_res.score, "per_class": per_class, "seconds": base_res.seconds}
        log.info("colour baseline: ACSA %.4f (%.1f s)", base_res.score, base_res.seconds)

    eval_model = ema.module if ema is not None else model
    for epoch in range(start_epoch, cfg.epochs):
        seed_epoch(train_loader, cfg.seed, epoch)
        model.train()
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                out = step_model(x)
                loss = criterion(out, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            _step_scheduler(sched, cfg, epoch, i, len(train_loader))
            if ema is not None:
                ema.update(model, step=epoch * len(train_loader) + i)
            with torch.no_grad():
                loss_sum += float(loss) * len(y)
                correct += float(np.mean([(out[h.column].argmax(1) == y[:, j]).float().mean().item()
                                          for j, h in enumerate(task.heads)])) * len(y)  # fmt: skip
                seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", top1=f"{correct / seen:.3f}")
        train_seconds = time.perf_counter() - start
        val = evaluate(eval_model, val_loader, task, device, amp_dtype, progress=progress, criterion=criterion)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": loss_sum / max(1, seen),
               "train_top1": correct / max(1, seen), "val_loss": val["loss"]}  # fmt: skip
        for column, head in val["heads"].items():
            row[f"val_{column}_top1"] = head["top1"]
            row[f"val_{column}_acsa"] = head["acsa"]
        row.update(val_score=val["score"], train_img_per_s=seen / train_seconds,
                   seconds=time.perf_counter() - start)  # fmt: skip
        history.append(row)
        improved = val["score"] > best_score
        if improved:
            best_score, best_epoch, bad_epochs = val["score"], epoch + 1, 0
            metrics = {"score": val["score"], "metric": task.metric, "task": task.name, "epoch": epoch + 1,
                       **_strip_arrays(val)}  # fmt: skip
            if baseline is not None:
                metrics.update(baseline_score=baseline["score"], baseline_per_class=baseline["per_class"])
            _save_ckpt(run_dir / BEST_CKPT, eval_model, None, None, None, None, epoch, history, best_score,
                       best_epoch, bad_epochs, baseline)  # fmt: skip
            write_json(run_dir / METRICS_FILE, metrics)
        else:
            bad_epochs += 1
        _save_ckpt(last_path, model, opt, sched, scaler, ema, epoch, history, best_score, best_epoch, bad_epochs,
                   baseline)  # fmt: skip
        write_history(run_dir, history)
        msg = (f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
               f"score {val['score']:.4f}{' *' if improved else ''} lr {row['lr']:.2e} "
               f"{row['train_img_per_s']:.1f} img/s {row['seconds']:.0f}s")  # fmt: skip
        log.info(msg)
        if progress:
            tqdm.write(msg)
        if cfg.early_stopping and bad_epochs >= cfg.early_stopping:
            log.info("early stopping: no improvement for %d epochs", bad_epochs)
            break
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
    return FitResult(run_dir, pd.DataFrame(history), metrics, model)


def _save_ckpt(path, model, opt, sched, scaler, ema, epoch, history, best_score, best_epoch, bad_epochs, baseline):
    state = {
        "model": model.state_dict(),
        "model_config": getattr(model, "model_config", {}),
        "data_config": getattr(model, "data_config", {}),
        "optimizer": opt.state_dict() if opt is not None else None,
        "scheduler": sched.state_dict() if sched is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.module.state_dict() if ema is not None else None,
        "epoch": epoch,
        "history": history,
        "best_score": best_score,
        "best_epoch": best_epoch,
        "bad_epochs": bad_epochs,
        "baseline": baseline,
        "rng": _rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
