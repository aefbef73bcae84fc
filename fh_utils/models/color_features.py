"""Colour-histogram features of a uint8 RGB batch: joint HSV, LAB a*b*, L*, plus mean RGB.

One extractor for two users: the colour baseline (:mod:`fh_utils.training.baseline`) and
``create_model(color_hist=True)``, which concatenates these features with the backbone's.
"""

from __future__ import annotations

import torch
from torch import nn

_HUE_BINS, _SAT_BINS, _VAL_BINS = 12, 3, 4
_AB_BINS, _L_BINS = 8, 8


def _rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-6), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-6)
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return hue, sat, maxc


def _rgb_to_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], device=rgb.device
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / torch.tensor([0.9505, 1.0, 1.089], device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _hist(index: torch.Tensor, bins: int) -> torch.Tensor:
    """Normalised histogram per image of integer bin indices ``(B, N)``."""
    one_hot = torch.zeros(index.shape[0], bins, device=index.device)
    one_hot.scatter_add_(1, index, torch.ones_like(index, dtype=one_hot.dtype))
    return one_hot / index.shape[1]


class ColorHistogram(nn.Module):
    """Colour histograms of the centre of a uint8 RGB crop: joint HSV, LAB a*b*, L*, plus mean RGB.

    Not trained and not differentiated: it reads colour statistics the backbone would otherwise have to
    learn from few examples. Output is the square root of each histogram (Hellinger), so a linear layer on
    it compares distributions sensibly.

    Args:
        centre: Fraction of the crop side kept around the centre (the garment, not the box's corners).
        rgb_channels: Which input channels are R, G, B (default the first three).
    """

    num_features = _HUE_BINS * _SAT_BINS * _VAL_BINS + _AB_BINS * _AB_BINS + _L_BINS + 3

    def __init__(self, centre: float = 0.6, rgb_channels: tuple[int, ...] | None = (0, 1, 2)):
        super().__init__()
        self.centre = centre
        self.rgb_channels = list(rgb_channels or (0, 1, 2))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, num_features)`` of a uint8 (or 0..255) ``(B, C, H, W)`` batch."""
        rgb = x[:, self.rgb_channels].float() / 255.0
        h, w = rgb.shape[-2:]
        dh, dw = int(h * (1 - self.centre) / 2), int(w * (1 - self.centre) / 2)
        rgb = rgb[:, :, dh : h - dh, dw : w - dw]
        hue, sat, val = _rgb_to_hsv(rgb)
        hi = (hue * _HUE_BINS).long().clamp(0, _HUE_BINS - 1)
        si = (sat * _SAT_BINS).long().clamp(0, _SAT_BINS - 1)
        vi = (val * _VAL_BINS).long().clamp(0, _VAL_BINS - 1)
        hsv_index = ((hi * _SAT_BINS + si) * _VAL_BINS + vi).flatten(1)
        lum, a, b = _rgb_to_lab(rgb)
        ai = ((a + 64) / 128 * _AB_BINS).long().clamp(0, _AB_BINS - 1)
        bi = ((b + 64) / 128 * _AB_BINS).long().clamp(0, _AB_BINS - 1)
        li = (lum / 100 * _L_BINS).long().clamp(0, _L_BINS - 1).flatten(1)
        feats = [
            _hist(hsv_index, _HUE_BINS * _SAT_BINS * _VAL_BINS),
            _hist((ai * _AB_BINS + bi).flatten(1), _AB_BINS * _AB_BINS),
            _hist(li, _L_BINS),
        ]
        hists = torch.cat(feats, dim=1).sqrt()
        return torch.cat([hists, rgb.mean(dim=(2, 3))], dim=1)
