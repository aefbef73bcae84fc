"""Test-time augmentation: a wrapper model that averages each head's probabilities over a few views.

The views are geometric only (flips, shifted crops), never a colour change, so every mode is safe for ST2.
The wrapper returns ``log(mean probabilities)`` as its "logits": :func:`fh_utils.training.engine.evaluate` and
``predict`` take a softmax, which gives back the averaged probabilities exactly, so the engine needs no change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "hflip", "hflip+crops")
CROP_SCALE = 0.9  # side of the four corner crops of "hflip+crops", as a fraction of the input side


def check_tta(mode: str) -> str:
    """Validate a TTA mode name (``"none"``, ``"hflip"``, ``"hflip+crops"``) and return it."""
    mode = str(mode or "none").strip().lower()
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    return mode


def _corner_crops(x: torch.Tensor, scale: float = CROP_SCALE) -> list[torch.Tensor]:
    """The four corner crops of side ``scale * H`` resized back to ``H x W`` (bilinear; geometry only)."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    xf = x.float()
    crops = [xf[..., :ch, :cw], xf[..., :ch, w - cw :], xf[..., h - ch :, :cw], xf[..., h - ch :, w - cw :]]
    return [F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False) for c in crops]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a ``(B, C, H, W)`` batch that ``mode`` averages over (the batch itself first).

    ``"hflip"``: the batch and its mirror image (2 views). ``"hflip+crops"``: those and the four corner crops
    of 90 % of the side, resized back (6 views). Crops are float 0..255, which the models normalise as uint8.
    """
    mode = check_tta(mode)
    views = [x]
    if mode in ("hflip", "hflip+crops"):
        views.append(x.flip(-1))
    if mode == "hflip+crops":
        views.extend(_corner_crops(x))
    return views


class TTAModel(nn.Module):
    """Average the softmax of every head of ``model`` over the views of :func:`tta_views`.

    Args:
        model: A model returning ``{column: logits}`` (e.g. :class:`fh_utils.models.factory.FashionHowNet`).
        mode: One of :data:`TTA_MODES`.

    ``forward`` returns ``{column: log(mean probabilities)}``; ``model_config`` and ``input_config`` are the
    wrapped model's.
    """

    def __init__(self, model: nn.Module, mode: str = "hflip"):
        super().__init__()
        self.model = model
        self.mode = check_tta(mode)
        self.model_config = getattr(model, "model_config", {})
        self.input_config = getattr(model, "input_config", {})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Averaged log-probabilities per head for a uint8 (or 0..255 float) batch."""
        total: dict[str, torch.Tensor] = {}
        views = tta_views(x, self.mode)
        for view in views:
            for column, logits in self.model(view).items():
                p = logits.float().softmax(1)
                total[column] = total[column] + p if column in total else p
        return {column: (p / len(views)).clamp_min(1e-12).log() for column, p in total.items()}


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """``model`` wrapped in :class:`TTAModel`, or ``model`` itself for ``mode="none"``."""
    return model if check_tta(mode) == "none" else TTAModel(model, mode)
