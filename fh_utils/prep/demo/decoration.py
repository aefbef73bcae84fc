"""Decoration on the garment (the Embellishment class): none, one brooch-sized motif, or many small ones."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from fh_utils.prep.demo.palette import PALETTE, TRIMS
from fh_utils.tasks import COLOR


def _motif(img: np.ndarray, rng: np.random.Generator, centre: tuple[int, int], r: int, kind: int, colour):
    """One decoration: button, star, flower, stud or bow, with a darker rim so it reads on any fabric."""
    cx, cy = centre
    rim = tuple(int(c * 0.55) for c in colour)
    if kind == 0:  # button
        cv2.circle(img, centre, r, rim, -1, cv2.LINE_AA)
        cv2.circle(img, centre, max(1, int(r * 0.8)), colour, -1, cv2.LINE_AA)
        for dx in (-1, 1):
            cv2.circle(img, (cx + dx * max(1, r // 3), cy), max(1, r // 6), rim, -1, cv2.LINE_AA)
    elif kind == 1:  # star
        ang = np.arange(10) * math.pi / 5 + rng.uniform(0, math.pi)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, rim, 1, cv2.LINE_AA)
    elif kind == 2:  # flower
        for k in range(5):
            a = k * 2 * math.pi / 5
            petal = (int(cx + r * 0.55 * math.cos(a)), int(cy + r * 0.55 * math.sin(a)))
            cv2.circle(img, petal, max(1, int(r * 0.45)), colour, -1, cv2.LINE_AA)
        cv2.circle(img, centre, max(1, int(r * 0.3)), rim, -1, cv2.LINE_AA)
    elif kind == 3:  # stud
        pts = np.array([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, rim, 1, cv2.LINE_AA)
    else:  # bow
        for side in (-1, 1):
            wing = [(cx, cy), (cx + side * r, cy - r // 2 - 1), (cx + side * r, cy + r // 2 + 1)]
            pts = np.array(wing, np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        cv2.circle(img, centre, max(1, r // 4), rim, -1, cv2.LINE_AA)


def _trim_colour(rng: np.random.Generator, base: Sequence[int]) -> tuple[int, int, int]:
    """A decoration colour that stands out from the garment (gold, silver, pearl, red, black, white)."""
    order = rng.permutation(len(TRIMS))
    for k in order:
        if np.abs(np.asarray(TRIMS[k], np.float32) - np.asarray(base, np.float32)).sum() > 150:
            return TRIMS[k]
    return TRIMS[order[0]]


def embellish(rng: np.random.Generator, img: np.ndarray, visible: np.ndarray, box, amount: int, colour: int):
    """Decorate: nothing, one brooch-sized motif on the upper garment, or many small motifs all over it."""
    if amount == 0:
        return
    x0, y0, x1, y1 = box
    gw, gh = x1 - x0, y1 - y0
    trim = _trim_colour(rng, PALETTE[COLOR[colour]])
    if amount == 1:
        count, radius, region = 1, gw * rng.uniform(0.08, 0.12), 0.5
    else:
        count, radius, region = int(rng.integers(14, 30)), gw * rng.uniform(0.03, 0.045), 1.0
    kinds = rng.integers(5, size=2)
    placed = 0
    for _ in range(count * 30):  # rejection sampling: motifs must sit on visible fabric
        x, y = int(rng.uniform(0, gw)), int(rng.uniform(0, gh * region))
        r = max(2, int(radius))
        if not _inside(visible, x, y, r):
            continue
        _motif(img, rng, (x0 + x, y0 + y), r, int(kinds[placed % 2]), trim)
        placed += 1
        if placed == count:
            return


def _inside(mask: np.ndarray, x: int, y: int, r: int) -> bool:
    h, w = mask.shape
    probes = ((x, y), (x - r, y), (x + r, y), (x, y - r), (x, y + r))
    return all(0 <= px < w and 0 <= py < h and mask[py, px] > 250 for px, py in probes)
