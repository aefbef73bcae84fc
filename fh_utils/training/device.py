"""Where and in what precision a run computes: the device, the CPU threads, mixed precision, the running sums."""

from __future__ import annotations

import os

import torch

from fh_utils.training.config import TrainConfig


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


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.amp`` on ``device`` (None: full precision).

    ``"auto"`` is bf16 on CUDA when supported, else fp16, and off elsewhere.
    """
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def uses_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether ``cfg.channels_last`` puts the model and batches in channels_last (``"auto"``: on CUDA)."""
    return device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)


def sum_dtype(device: torch.device) -> torch.dtype:
    """Dtype of the running sums kept on the device: float64 (the Python floats they replace) where it exists."""
    return torch.float32 if device.type == "mps" else torch.float64
