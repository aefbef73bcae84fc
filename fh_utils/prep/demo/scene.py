"""Around the figure: the cluttered background behind it, and the camera's lighting and noise over it."""

from __future__ import annotations

import math

import cv2
import numpy as np

from fh_utils.prep.demo.palette import clutter_colour


def _gradient_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A two-colour gradient with smooth colour blobs, drawn small and upscaled (cheap, and low-frequency)."""
    n = 32
    c1, c2 = np.asarray(clutter_colour(rng), np.float32), np.asarray(clutter_colour(rng), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1)
    t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) + 0.5
    small = c1 + np.clip(t, 0, 1)[..., None] * (c2 - c1)
    blobs = cv2.resize(rng.normal(0, 22, (5, 5, 3)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    small = np.clip(small + blobs, 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _draw_clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Random rectangles, circles, polygons, stripes and lines, like furniture and props behind a model."""
    h, w = img.shape[:2]
    s = min(h, w)
    if rng.random() < 0.5:  # a floor
        y = int(h * rng.uniform(0.6, 0.88))
        cv2.rectangle(img, (0, y), (w, h), clutter_colour(rng), -1)
        for k in range(int(rng.integers(0, 6))):
            yk = y + int((h - y) * (k + 1) / 7)
            cv2.line(img, (0, yk), (w, yk), clutter_colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(6, 18))):
        kind = rng.integers(5)
        colour = clutter_colour(rng)
        x0, y0 = int(rng.integers(-s // 8, w)), int(rng.integers(-s // 8, h))
        size = int(s * rng.uniform(0.05, 0.45))
        if kind == 0:
            cv2.rectangle(img, (x0, y0), (x0 + size, y0 + int(size * rng.uniform(0.3, 2.5))), colour, -1)
        elif kind == 1:
            cv2.circle(img, (x0, y0), size // 2, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            pts = np.stack([x0 + rng.integers(0, size + 1, 5), y0 + rng.integers(0, size + 1, 5)], 1)
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
        elif kind == 3:  # a block of parallel stripes (curtains, shelves, tiles)
            step, thick = int(rng.integers(6, 30)), int(rng.integers(2, 10))
            vertical = rng.random() < 0.5
            for k in range(0, size, step):
                a, b = ((k, 0), (k, size)) if vertical else ((0, k), (size, k))
                cv2.line(img, (x0 + a[0], y0 + a[1]), (x0 + b[0], y0 + b[1]), colour, thick)
        else:
            x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (x0, y0), (x1, y1), colour, int(rng.integers(1, 8)), cv2.LINE_AA)


def draw_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An ``(h, w, 3)`` RGB background: gradient, clutter, and often a depth-of-field blur."""
    img = _gradient_background(rng, h, w)
    _draw_clutter(rng, img)
    if rng.random() < 0.5:  # depth of field: the background is often out of focus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 2.5))
    return img


def photograph(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven lighting, brightness, colour temperature and sensor noise, as a camera would add."""
    h, w = img.shape[:2]
    warmth, tint = rng.uniform(-1, 1), rng.uniform(-0.015, 0.015)
    gains = rng.uniform(0.85, 1.12) * np.array([1 + 0.05 * warmth, 1 + tint, 1 - 0.05 * warmth])
    field = rng.uniform(0.9, 1.1, (4, 4, 1)) * gains  # a smooth light falloff, drawn small and upscaled
    # Cubic to 16x16, then linear: a direct cubic float upscale to full size is ~40x slower.
    field = cv2.resize(field.astype(np.float32), (16, 16), interpolation=cv2.INTER_CUBIC)
    light = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.multiply(img, light, dtype=cv2.CV_16S)
    # Uniform integer noise: draws ~10x faster than Gaussian floats and looks the same after JPEG.
    amp = int(rng.integers(3, 9))
    noise = rng.integers(-amp, amp + 1, size=img.shape, dtype=np.int16)
    return cv2.add(out, noise, dtype=cv2.CV_8U)  # saturates to 0..255
