"""The garment's fabric: base colour (the Color class), pattern (the Daily class) and shading."""

from __future__ import annotations

import math

import cv2
import numpy as np

from fh_utils.prep.demo.palette import PALETTE, jitter_colour
from fh_utils.tasks import COLOR


def _pattern_colour(base: np.ndarray, strength: float) -> np.ndarray:
    """A shade of the base colour: toward black on light colours, toward white on dark ones."""
    luminance = float(base @ np.array([0.299, 0.587, 0.114], np.float32))
    target = 0.0 if luminance > 110 else 255.0
    return base + (target - base) * strength


def _pattern_alpha(rng: np.random.Generator, daily: int, h: int, w: int, gw: float) -> np.ndarray:
    """Where the pattern colour shows (0..1), for the Daily class; periods scale with the garment width."""
    yy, xx = np.ogrid[0:h, 0:w]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    if daily == 0:  # heathered knit: fine horizontal ribs and speckle
        period = gw * rng.uniform(0.025, 0.04)
        ribs = 0.5 + 0.5 * np.sin(yy * (2 * math.pi / period))
        speckle = rng.random((h // 2 + 1, w // 2 + 1), dtype=np.float32)
        speckle = cv2.resize(speckle, (w, h), interpolation=cv2.INTER_NEAREST)
        return 0.35 * ribs + 0.45 * (speckle > 0.6)
    if daily == 1:  # plain
        return np.zeros((h, w), np.float32)
    if daily == 2:  # pinstripes
        period = gw * rng.uniform(0.07, 0.11)
        phase = (xx + rng.uniform(0, period)) % period
        return np.broadcast_to((phase < max(1.5, period * 0.12)).astype(np.float32), (h, w))
    if daily == 3:  # checks: crossing translucent bands make the plaid's darker squares
        period = gw * rng.uniform(0.16, 0.24)
        band = period * rng.uniform(0.3, 0.45)
        ox, oy = rng.uniform(0, period, 2)
        return 0.55 * ((xx + ox) % period < band) + 0.55 * ((yy + oy) % period < band)
    if daily == 4:  # polka dots on a staggered grid
        period = gw * rng.uniform(0.12, 0.18)
        radius = period * rng.uniform(0.2, 0.28)
        ox, oy = rng.uniform(0, period, 2)
        row = np.floor((yy + oy) / period)
        dx = (xx + ox + (row % 2) * period / 2) % period - period / 2
        dy = (yy + oy) % period - period / 2
        return (dx * dx + dy * dy < radius * radius).astype(np.float32)
    # sportswear: bold diagonal bands
    period = gw * rng.uniform(0.3, 0.45)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    phase = (xx + direction * yy + rng.uniform(0, period)) % period
    return (phase < period * rng.uniform(0.22, 0.3)).astype(np.float32)


def _shading(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Light falloff across the garment, a rounded-body darkening at the sides and a few soft folds."""
    yy, xx = np.ogrid[0:h, 0:w]
    xn, yn = xx.astype(np.float32) / max(w - 1, 1) - 0.5, yy.astype(np.float32) / max(h - 1, 1) - 0.5
    gx, gy = rng.uniform(-0.3, 0.3, 2)
    shade = 1.0 + gx * xn + gy * yn - rng.uniform(0.1, 0.3) * (2 * xn) ** 2
    for _ in range(int(rng.integers(1, 5))):  # folds: soft vertical dark streaks
        centre, width = rng.uniform(-0.4, 0.4), rng.uniform(0.02, 0.06)
        shade = shade - rng.uniform(0.05, 0.14) * np.exp(-((xn - centre) ** 2) / (2 * width**2))
    return np.clip(shade, 0.45, 1.25).astype(np.float32)


def garment_layer(streams: dict[str, np.random.Generator], box, colour: int, daily: int) -> np.ndarray:
    """The garment's fabric over ``box``: base colour, Daily pattern and shading (float32 RGB)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    base = jitter_colour(streams["colour"], PALETTE[COLOR[colour]], 7)
    strength = 0.5 if daily == 5 else 0.38
    alpha = _pattern_alpha(streams["pattern"], daily, h, w, gw=float(w))[..., None]
    layer = base + (_pattern_colour(base, strength) - base) * np.clip(alpha, 0, 1)
    return layer * _shading(streams["shading"], h, w)[..., None]


def composite(img: np.ndarray, mask: np.ndarray, box, layer: np.ndarray) -> None:
    """Blend ``layer`` into ``img`` over ``box`` where the soft ``mask`` (255 = garment) covers it, in place."""
    x0, y0, x1, y1 = box
    a = mask[y0:y1, x0:x1, None].astype(np.float32) / 255.0
    crop = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(crop + (layer - crop) * a, 0, 255).astype(np.uint8)
