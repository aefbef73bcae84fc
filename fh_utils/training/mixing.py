"""Batch mixing: CutMix (colour-safe) and mixup, applied by the engine to the uint8 batch before the model.

CutMix (Yun et al., 2019) pastes a box of another image into each image: every output pixel is a pixel of one of
the two source images, so no two colours are blended into a third (red and white never make pink, itself an ST2
class). Mixup (Zhang et al., 2018) blends whole images; it is here for comparison.

Pairing is timm's: image ``i`` is mixed with image ``B - 1 - i`` (the batch flipped), with one weight ``lam`` and
one box per batch. Only Python numbers are drawn (from a generator seeded by ``(seed, epoch)``, so a resumed run
mixes the same way), so nothing goes between host and device. The targets stay hard: the loss of a mixed batch is
``lam * L(out, y) + (1 - lam) * L(out, y_flipped)`` (:func:`mixed_loss`). Cross-entropy is linear in its target
distribution, so this equals the cross-entropy against the soft targets ``lam * onehot(y) + (1 - lam) *
onehot(y_flipped)`` (:func:`soft_targets`), label smoothing and logit adjustment (balanced softmax) included; it
also works unchanged with several heads (ST1: every head mixed with the same ``lam``), class weights (DRW) and
distillation. For CutMix ``lam`` is the share of the image left to image A once the box is clipped to the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fh_utils.training.config import MIX_MODES, TrainConfig

_STREAM = 0x6D6978  # "mix": the mixing draws have their own stream of the epoch's seed


@dataclass(frozen=True)
class Mix:
    """How one batch was mixed: the partner images' labels and the weight of the batch's own labels."""

    targets_b: torch.Tensor
    lam: float


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a box covering about ``1 - lam`` of the image, centred anywhere, clipped (timm's)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def cutmix(x: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, float]:
    """``x`` with ``box`` of the flipped batch pasted in, and the share of each image that is still its own."""
    y0, y1, x0, x1 = box
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[..., y0:y1, x0:x1].flip(0)
    height, width = x.shape[-2:]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


def mixup(x: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * x + (1 - lam) * x_flipped`` as float on the 0..255 scale (the model normalises it like uint8)."""
    return x.float() * lam + x.flip(0).float() * (1.0 - lam)


class BatchMixer:
    """Mixes training batches as ``cfg`` says (``mix``, ``mix_prob``, ``mix_alpha``); one per epoch.

    Args:
        cfg: The training configuration.
        epoch: The epoch (0-based); with ``cfg.seed`` it seeds every draw of the epoch.
    """

    def __init__(self, cfg: TrainConfig, epoch: int):
        if cfg.mix not in MIX_MODES:
            raise ValueError(f"mix must be one of {MIX_MODES}, got {cfg.mix!r}")
        self.mode, self.prob, self.alpha = cfg.mix, float(cfg.mix_prob), float(cfg.mix_alpha)
        self.rng = np.random.default_rng([cfg.seed, epoch, _STREAM])

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Mix | None]:
        """The batch to train on and how it was mixed (None: left as it was)."""
        if self.mode == "none" or len(x) < 2 or self.rng.random() >= self.prob:
            return x, None
        lam = float(self.rng.beta(self.alpha, self.alpha))
        if self.mode == "cutmix":
            x, lam = cutmix(x, cutmix_box(x.shape[-2], x.shape[-1], lam, self.rng))
        else:
            x = mixup(x, lam)
        return x, Mix(targets.flip(0), lam)


def create_mixer(cfg: TrainConfig, epoch: int) -> BatchMixer | None:
    """The epoch's :class:`BatchMixer`, or None when ``cfg.mix`` is ``"none"``."""
    return BatchMixer(cfg, epoch) if cfg.mix != "none" else None


def mixed_loss(loss_fn: Callable[..., Any], outputs: Any, targets: torch.Tensor, mix: Mix | None, *args: Any) -> Any:
    """``loss_fn(outputs, targets, *args)``, or for a mixed batch the ``lam``-combination of it for both targets.

    ``lam * loss_fn(outputs, targets, *args) + (1 - lam) * loss_fn(outputs, partners, *args)``; ``loss_fn`` may
    return a tensor or a tuple of tensors (the distillation loss's total and terms): each is combined.
    """
    if mix is None:
        return loss_fn(outputs, targets, *args)
    a, b = loss_fn(outputs, targets, *args), loss_fn(outputs, mix.targets_b, *args)
    if isinstance(a, tuple):
        return tuple(mix.lam * p + (1.0 - mix.lam) * q for p, q in zip(a, b))
    return mix.lam * a + (1.0 - mix.lam) * b


def soft_targets(targets: torch.Tensor, mix: Mix | None, num_classes: list[int]) -> list[torch.Tensor]:
    """Per head, the ``(B, C)`` target distribution a (mixed) batch trains towards; each row sums to 1."""
    out = []
    for j, n in enumerate(num_classes):
        hot = torch.nn.functional.one_hot(targets[:, j], n).float()
        if mix is not None:
            hot = mix.lam * hot + (1.0 - mix.lam) * torch.nn.functional.one_hot(mix.targets_b[:, j], n).float()
        out.append(hot)
    return out
