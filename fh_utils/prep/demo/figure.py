"""The person-like figure and the garment's shape: the silhouette carries the Gender class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from fh_utils.prep.demo.decoration import embellish
from fh_utils.prep.demo.fabric import composite, garment_layer
from fh_utils.prep.demo.palette import HAIR, SKIN, clutter_colour, jitter_colour

# Garment outlines per Gender class, in figure units (1 unit ~ head height, the figure is 8 units tall):
# the right half from the neck to the hem as (x, y); it is mirrored, and the neckline closes it at
# (0, neck_depth). Sleeves: (width, fraction of the arm covered, 0 = none).
_SILHOUETTES = {
    0: {"half": [(0.32, 1.18), (1.18, 1.34), (1.2, 1.7), (1.14, 4.25)], "neck": 2.0, "sleeve": (0.52, 1.0)},
    1: {"half": [(0.34, 1.15), (0.98, 1.34), (0.98, 1.7), (0.96, 3.9)], "neck": 1.42, "sleeve": (0.44, 0.38)},
    2: {"half": [(0.3, 1.2), (0.74, 1.36), (0.74, 1.7), (0.7, 2.35), (1.75, 4.9)], "neck": 1.48,
        "sleeve": (0.56, 0.22)},
    3: {"half": [(0.28, 1.2), (0.84, 1.36), (0.82, 1.75), (0.56, 3.0), (0.94, 3.8), (1.28, 6.7)],
        "neck": 1.62, "sleeve": (0.3, 0.9)},
    4: {"half": [(0.36, 1.26), (0.56, 1.3), (0.84, 1.95), (0.8, 2.75)], "neck": 2.35, "sleeve": (0.0, 0.0)},
}  # fmt: skip
_SHOULDER_X = {0: 1.02, 1: 0.9, 2: 0.7, 3: 0.8, 4: 0.74}  # where the arm joins the body, per silhouette


class _Figure:
    """Maps figure units to pixels (with a small tilt) and draws into the image and the figure mask."""

    def __init__(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray):
        h, w = img.shape[:2]
        self.img, self.mask = img, mask
        height = h * rng.uniform(0.72, 1.1)  # above 1: cropped at the shins, as in many real photos
        self.u = height / 8.0
        self.cx = w * rng.uniform(0.32, 0.68)
        self.top = h * rng.uniform(0.01, 0.08)
        self.build = rng.uniform(0.9, 1.1)  # body width factor
        tilt = math.radians(rng.uniform(-4, 4))
        self.cos, self.sin = math.cos(tilt), math.sin(tilt)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        x *= self.build
        px = self.cx + (x * self.cos - (y - 4) * self.sin) * self.u
        py = self.top + (4 + x * self.sin + (y - 4) * self.cos) * self.u
        return int(round(px)), int(round(py))

    def pts(self, points: Sequence[tuple[float, float]]) -> np.ndarray:
        return np.array([self.pt(x, y) for x, y in points], np.int32)

    def px(self, units: float) -> int:
        return max(1, int(round(units * self.u)))

    def line(self, points: Sequence[tuple[float, float]], width: float, colour) -> None:
        p = self.pts(points)
        for target, col in ((self.img, colour), (self.mask, 255)):
            cv2.polylines(target, [p], False, col, self.px(width), cv2.LINE_AA)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], colour) -> None:
        c, ax = self.pt(*centre), (self.px(axes[0]), self.px(axes[1]))
        for target, col in ((self.img, colour), (self.mask, 255)):
            cv2.ellipse(target, c, ax, 0, 0, 360, col, -1, cv2.LINE_AA)


def _arm_points(rng: np.random.Generator, gender: int) -> list[list[tuple[float, float]]]:
    """Shoulder, elbow and wrist of each arm, hanging down and a little away from the body."""
    arms = []
    for side in (-1, 1):
        sx = _SHOULDER_X[gender]
        ex = sx + rng.uniform(0.1, 0.45)
        wx = ex + rng.uniform(-0.15, 0.5)
        arms.append([(side * sx, 1.5), (side * ex, 2.95), (side * wx, 4.25)])
    return arms


def _garment_masks(rng: np.random.Generator, fig: _Figure, gender: int, arms) -> tuple[np.ndarray, ...]:
    """The body and sleeve masks of the garment, with its outline jittered so shapes vary within a class."""
    spec = _SILHOUETTES[gender]
    right = [(x * rng.uniform(0.92, 1.08), y + rng.uniform(-0.08, 0.08)) for x, y in spec["half"]]
    outline = right + [(-x, y) for x, y in right[::-1]] + [(0.0, spec["neck"] + rng.uniform(-0.1, 0.1))]
    body = np.zeros_like(fig.mask)
    cv2.fillPoly(body, [fig.pts(outline)], 255, cv2.LINE_AA)
    sleeves = np.zeros_like(fig.mask)
    width, cover = spec["sleeve"]
    if cover > 0:
        paths = [fig.pts(_partial_path(arm, cover)) for arm in arms]
        cv2.polylines(sleeves, paths, False, 255, fig.px(width), cv2.LINE_AA)
    return body, sleeves


def _partial_path(path: list[tuple[float, float]], fraction: float) -> list[tuple[float, float]]:
    """The first ``fraction`` of a polyline's length (a short sleeve covers only the upper arm)."""
    p = np.asarray(path, np.float64)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    target, out = fraction * seg.sum(), [tuple(p[0])]
    for a, b, length in zip(p[:-1], p[1:], seg):
        if target <= length:
            out.append(tuple(a + (b - a) * (target / max(length, 1e-9))))
            break
        out.append(tuple(b))
        target -= length
    return out


def draw_figure(streams: dict[str, np.random.Generator], img: np.ndarray, labels: dict[str, int]):
    """Draw the figure wearing the garment. Returns (figure mask, garment box as x0, y0, x1, y1) or None."""
    rng = streams["figure"]
    fig_mask = np.zeros(img.shape[:2], np.uint8)
    fig = _Figure(rng, img, fig_mask)
    gender, skin = labels["Gender"], tuple(int(v) for v in jitter_colour(rng, SKIN[rng.integers(5)], 6))
    hair = tuple(int(v) for v in jitter_colour(rng, HAIR[rng.integers(5)], 8))
    trousers = clutter_colour(rng)
    for side in (-1, 1):  # legs and shoes
        foot = (side * rng.uniform(0.3, 0.6), 7.6)
        fig.line([(side * 0.36, 3.7), foot], 0.42, trousers)
        fig.ellipse((foot[0] + side * 0.1, 7.75), (0.3, 0.14), (30, 28, 30))
    if rng.random() < 0.4:  # long hair falls behind the shoulders
        fig.line([(0, 0.5), (0, 1.9)], 0.95, hair)
    fig.line([(0, 0.8), (0, 1.35)], 0.3, skin)  # neck
    arms = _arm_points(rng, gender)
    body, sleeves = _garment_masks(streams["shape"], fig, gender, arms)
    garment = cv2.bitwise_or(body, sleeves)
    x, y, w, h = cv2.boundingRect(garment)
    if w < 4 or h < 4:
        return None
    box = (x, y, x + w, y + h)
    layer = garment_layer(streams, box, labels["Color"], labels["Daily"])
    composite(img, body, box, layer)
    arm_mask = np.zeros_like(fig_mask)
    for arm in arms:  # skin arms over the body, then sleeves over the arms
        for target, col in ((img, skin), (arm_mask, 255)):
            cv2.polylines(target, [fig.pts(arm)], False, col, fig.px(0.26), cv2.LINE_AA)
        fig.ellipse(arm[-1], (0.14, 0.17), skin)
    composite(img, sleeves, box, layer)
    visible = cv2.bitwise_or(cv2.bitwise_and(body, cv2.bitwise_not(arm_mask)), sleeves)[y : y + h, x : x + w]
    embellish(streams["decoration"], img, visible, box, labels["Embellishment"], labels["Color"])
    fig.ellipse((0, 0.42), (0.42, 0.5), hair)  # hair, then the face over its lower part
    fig.ellipse((0, 0.58), (0.34, 0.42), skin)
    np.maximum(fig_mask, garment, out=fig_mask)
    np.maximum(fig_mask, arm_mask, out=fig_mask)
    return fig_mask, box
