"""The learning-rate range test (Smith, 2017; fastai's ``lr_find``) for any training configuration: :func:`find_lr`.

The learning rate grows exponentially from ``start_lr`` to ``end_lr`` over ``num_iter`` training steps on the
training loader; the loss of each step is smoothed (an exponential moving average) and the sweep stops once the
smoothed loss passes ``diverge`` times its best value, or a loss is not finite. A good learning rate lies where
the smoothed loss still falls steeply, well before its minimum.

The sweep itself is torch-lr-finder's (``LRFinder.range_test``, exponential steps, smoothing and the divergence
stop): the engine's loss fits its ``criterion(outputs, labels)`` as it is
(:class:`~fh_utils.training.losses.MultiHeadLoss` takes the model's dict of logits per head and the
``(B, n_heads)`` targets the loader yields beside its uint8 images, which the model normalises). Around it, this
module adds what torch-lr-finder lacks, each for a reason:

- **The caller's model is never touched.** The sweep trains a deep copy, so the model's weights (bit for bit), its
  device and memory format stay as they were; the optimiser is a new one from
  :func:`~fh_utils.training.optim.create_optimizer`, never the run's.
- **The data's randomness is restored.** Python's, NumPy's and torch's global RNGs, the loader's generator (the
  sampler's) and the dataset's augmentation RNG are put back afterwards, so a training started next draws the
  same batches and augmentations as without the sweep (:func:`fh_utils.training.fit` also re-seeds each epoch).
- **A non-finite loss stops the sweep.** torch-lr-finder's test ``loss > diverge_th * best_loss`` is False for
  NaN, so a NaN loss would run to ``num_iter``; the loss adapter ends the sweep at the first non-finite loss.
- **Gradient clipping** (``grad_clip``): torch-lr-finder's step does not clip; an optimiser step pre-hook clips
  the (unscaled) gradients as the engine does.
- **Precision and device** follow the engine: the configuration's device, autocast dtype (with a GradScaler for
  fp16) and channels_last.
- torch-lr-finder prints to stdout and has no switch for its progress bar: its prints are caught, and its bar
  follows ``progress``.

Not reproduced: ``compile`` (compiling for a hundred steps costs more than it saves), the weight EMA (it does not
change the training loss), a distillation teacher and batch mixing (the curve is the plain label loss's).

The suggestion is fastai's ``valley`` (its default since fastai 2.5): about halfway into the longest descending
stretch of the smoothed curve. The steepest point (fastai's ``steep``, torch-lr-finder's plot) follows
the largest single drop, so on a short noisy sweep one lucky batch can move it by a decade; the minimum divided by
ten (``minimum``) starts from the point where the loss is about to blow up. All three are returned; like fastai,
they ignore the first tenth of the steps (the loss barely moves there) and the last five (the blow-up).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from fh_utils.tasks import Task
from fh_utils.training.config import TrainConfig
from fh_utils.training.device import amp_dtype, resolve_device, uses_channels_last
from fh_utils.training.engine import resolve_training
from fh_utils.training.losses import MultiHeadLoss
from fh_utils.training.optim import create_optimizer

SUGGESTION_RULES = ("valley", "steep", "minimum")


class _NonFiniteLoss(Exception):
    """Raised by the loss adapter to end the sweep at a NaN or infinite loss."""


@dataclass
class LRFinderResult:
    """What :func:`find_lr` returns: the curve, the suggested learning rate and how the sweep ended.

    Attributes:
        lrs: The learning rate of each step (exponentially spaced from ``start_lr``).
        losses: The smoothed training loss after each step.
        raw_losses: Each step's batch loss as the engine computes it (before smoothing).
        suggestion: The suggested learning rate (``suggestions["valley"]``).
        suggestions: The learning rate each rule of :data:`SUGGESTION_RULES` picks.
        start_lr: First learning rate of the sweep.
        end_lr: Last learning rate the sweep would have reached.
        num_iter: Steps asked for; ``len(lrs)`` is fewer when the sweep stopped early.
        stopped: Why the sweep ended before ``num_iter`` steps (``""``: it did not).
        seconds: Wall time of the sweep.
        config: The training configuration swept (its ``lr`` is the run's own learning rate).
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestion: float
    suggestions: dict[str, float]
    start_lr: float
    end_lr: float
    num_iter: int
    stopped: str = ""
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per step: ``step``, ``lr``, ``loss`` (smoothed), ``raw_loss``."""
        return pd.DataFrame({"step": np.arange(1, len(self.lrs) + 1), "lr": self.lrs, "loss": self.losses,
                             "raw_loss": self.raw_losses})  # fmt: skip

    def describe(self) -> str:
        """A few lines for a notebook or the command line."""
        ended = f"stopped after {len(self.lrs)} of {self.num_iter} steps: {self.stopped}" if self.stopped \
            else f"{len(self.lrs)} steps"  # fmt: skip
        lines = [
            f"lr range test {self.start_lr:.1e} -> {self.end_lr:.1e}, {ended} ({self.seconds:.1f} s)",
            f"suggested lr {self.suggestion:.2e} (valley; steepest descent {self.suggestions['steep']:.2e}, "
            f"minimum/10 {self.suggestions['minimum']:.2e})",
        ]
        if "lr" in self.config:
            lines.append(f"this run's lr {self.config['lr']:.2e}")
        return "\n".join(lines)


def find_lr(
    model: nn.Module,
    train_loader: DataLoader,
    config: TrainConfig | dict | None = None,
    task: Task | str | None = None,
    class_priors: dict[str, torch.Tensor] | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    smooth: float = 0.05,
    diverge: float = 5.0,
    progress: bool = True,
    **overrides: Any,
) -> LRFinderResult:
    """Run the learning-rate range test of ``model`` on ``train_loader`` with a training configuration.

    ``model`` itself is not trained (a copy is), and the RNGs the loader and its augmentation draw from are
    restored afterwards: training ``model`` next gives the same run as without the test.

    Args:
        model: From :func:`fh_utils.models.create_model` (its ``model_config`` names the task).
        train_loader: The training loader (from :func:`fh_utils.data.create_loaders`); it is iterated again
            when ``num_iter`` exceeds its batches.
        config: The training configuration (:class:`TrainConfig` or a dict of its fields): optimiser, weight
            decay, loss, label smoothing, gradient clipping, device and precision. Its ``lr`` is not used.
        task: Task description (default: the one the model was built for).
        class_priors: Training class frequencies per head (:func:`fh_utils.training.losses.class_priors`);
            needed by ``loss="logit_adjust"``.
        start_lr: First learning rate (fastai's default).
        end_lr: Last learning rate (fastai's default).
        num_iter: Training steps of the sweep (at least 2).
        smooth: Weight of the newest loss in the exponential moving average (0: no smoothing).
        diverge: Stop once the smoothed loss exceeds this multiple of its best value.
        progress: Show a progress bar.
        **overrides: Fields of :class:`TrainConfig` overriding ``config`` (an unknown name is an error).

    Returns:
        An :class:`LRFinderResult`.

    Raises:
        ValueError: A sweep setting out of range, or ``loss="logit_adjust"`` without ``class_priors``.
    """
    from torch_lr_finder import LRFinder

    _check_sweep(start_lr, end_lr, num_iter, smooth, diverge)
    cfg, task = resolve_training(model, config, overrides, task, class_priors)
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg, device)
    net = copy.deepcopy(model).to(device)
    if uses_channels_last(cfg, device):
        net = net.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(net, cfg)
    if cfg.grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def clip(*_: Any) -> None:  # a step pre-hook must return None
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)

        optimizer.register_step_pre_hook(clip)
    criterion = _CheckedLoss(MultiHeadLoss(task, cfg, class_priors).to(device))
    amp = {}
    if dtype is not None:  # the engine's autocast, and its GradScaler (a real one for fp16 only)
        amp = {"amp_backend": "torch", "amp_config": {"device_type": device.type, "dtype": dtype},
               "grad_scaler": torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)}  # fmt: skip
    finder = LRFinder(net, optimizer, criterion, device=device, memory_cache=True, **amp)
    start, stopped = time.perf_counter(), ""
    with _preserved_rng(train_loader), _quiet_library(progress):
        try:
            finder.range_test(_train_iter(train_loader, uses_channels_last(cfg, device)), start_lr=start_lr,
                              end_lr=end_lr, num_iter=num_iter, step_mode="exp", smooth_f=smooth,
                              diverge_th=diverge)  # fmt: skip
        except _NonFiniteLoss as exc:
            stopped = f"the loss became {exc.args[0]} at lr {finder.optimizer.param_groups[0]['lr']:.2e}"
    lrs, losses = np.asarray(finder.history["lr"], float), np.asarray(finder.history["loss"], float)
    raw = np.asarray(criterion.values[: len(lrs)], float)
    if not stopped and len(lrs) < num_iter:
        stopped = f"the smoothed loss passed {diverge:g}x its best at lr {lrs[-1]:.2e}"
    del finder, net, optimizer  # the copy's memory (GPU) goes now, before the caller trains
    suggestions = suggest_lrs(lrs, losses)
    return LRFinderResult(lrs, losses, raw, suggestions["valley"], suggestions, start_lr, end_lr, num_iter,
                          stopped, time.perf_counter() - start, cfg.to_dict())  # fmt: skip


def _check_sweep(start_lr: float, end_lr: float, num_iter: int, smooth: float, diverge: float) -> None:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"the sweep needs 0 < start_lr < end_lr, got start_lr={start_lr:g}, end_lr={end_lr:g}")
    if int(num_iter) != num_iter or num_iter < 2:
        raise ValueError(f"num_iter must be an integer of at least 2, got {num_iter!r}")
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must lie in [0, 1), got {smooth:g}")
    if not diverge > 1:
        raise ValueError(f"diverge must be above 1 (a multiple of the best loss), got {diverge:g}")


class _CheckedLoss(nn.Module):
    """The engine's loss, recording each step's value and raising :class:`_NonFiniteLoss` on NaN or infinity."""

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion
        self.values: list[float] = []

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(outputs, targets)
        value = float(loss.detach())  # a host read per step, as torch-lr-finder's own .item() makes
        if not math.isfinite(value):
            raise _NonFiniteLoss(value)
        self.values.append(value)
        return loss


def _train_iter(loader: DataLoader, channels_last: bool) -> Any:
    """torch-lr-finder's endless training iterator over ``loader``, in channels_last when the engine's batches are."""
    from torch_lr_finder import TrainDataLoaderIter

    class TrainIter(TrainDataLoaderIter):
        def inputs_labels_from_batch(self, batch):
            x, y = batch[0], batch[1]
            return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    return TrainIter(loader)


@contextlib.contextmanager
def _preserved_rng(loader: DataLoader) -> Iterator[None]:
    """Put back every RNG an iteration of ``loader`` draws from: the global ones, its generator, its augmentation."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    generators = {id(g): (g, g.get_state()) for g in (loader.generator, getattr(loader.sampler, "generator", None))
                  if isinstance(g, torch.Generator)}  # fmt: skip
    transform = getattr(loader.dataset, "transform", None)
    transform_state = copy.deepcopy(transform.__dict__) if hasattr(transform, "__dict__") else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for generator, state in generators.values():
            generator.set_state(state)
        if transform_state is not None:
            transform.__dict__.update(transform_state)


@contextlib.contextmanager
def _quiet_library(progress: bool) -> Iterator[None]:
    """torch-lr-finder's prints caught; its progress bar shown only with ``progress``."""
    import torch_lr_finder.lr_finder as library
    from tqdm.auto import tqdm

    bar = functools.partial(tqdm, desc="lr find", leave=False, disable=not progress)
    with mock.patch.object(library, "tqdm", bar), contextlib.redirect_stdout(io.StringIO()):
        yield


def suggest_lrs(lrs: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """The learning rate each rule of :data:`SUGGESTION_RULES` picks from a range test's smoothed curve.

    As fastai, the first tenth of the steps and the last five are left out when at least ten steps remain.

    - ``valley`` (fastai's default): about halfway into the longest descending stretch of the curve (the longest
      decreasing subsequence, from its start to its end), as fastai computes it.
    - ``steep``: the steepest descent, where the loss falls fastest per decade of learning rate.
    - ``minimum``: a tenth of the learning rate at the lowest loss.

    Args:
        lrs: The learning rates of the sweep, increasing.
        losses: The smoothed loss at each.
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    if len(lrs) == 0 or len(lrs) != len(losses):
        raise ValueError(f"a range test's curve needs as many losses as learning rates, got {len(lrs)} and "
                         f"{len(losses)}")  # fmt: skip
    lo, hi = len(lrs) // 10, len(lrs) - 5
    if hi - lo >= 10:
        lrs, losses = lrs[lo:hi], losses[lo:hi]
    if len(lrs) == 1:
        return dict.fromkeys(SUGGESTION_RULES, float(lrs[0]))
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return {"valley": float(lrs[_valley_index(losses)]), "steep": float(lrs[int(np.argmin(slopes))]),
            "minimum": float(lrs[int(np.argmin(losses))]) / 10}  # fmt: skip


def _valley_index(losses: np.ndarray) -> int:
    """The index of fastai's ``valley``: about halfway into the longest decreasing subsequence of ``losses``."""
    n = len(losses)
    longest = [1] * n  # the longest decreasing subsequence ending at each step
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[best_end]:
            best_end = i
    best_start = best_end - longest[best_end]  # fastai's: one before the subsequence's first step
    third = (best_end - best_start) / 3
    return min(max(best_start + int(third) + int(third / 2), 0), n - 1)  # 0 when the curve never falls
