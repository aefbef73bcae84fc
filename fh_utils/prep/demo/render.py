"""Drawing one demo image from its seed key and labels: background, figure, garment, camera."""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from fh_utils.prep.demo.figure import draw_figure
from fh_utils.prep.demo.plan import SPLIT_CODES
from fh_utils.prep.demo.scene import draw_background, photograph

_STREAMS = ("scene", "figure", "shape", "colour", "pattern", "shading", "decoration", "camera")


def render_image(
    seed: int, split: str, index: int, labels: dict[str, int], size_range: tuple[int, int], rgba: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw one demo image.

    Args:
        seed: Dataset seed.
        split: ``"train"`` or ``"val"``.
        index: Image index within the split; with ``seed`` and ``split`` it seeds the image's generator.
        labels: ``{"Daily", "Gender", "Embellishment", "Color"}`` class ids.
        size_range: Smallest and largest image side, px.
        rgba: Return RGBA with a transparent background outside the figure (RGB zero there, as in many
            real cut-out PNGs, so a loader that drops alpha instead of compositing sees black).

    Returns:
        The image (RGB or RGBA uint8) and the garment box ``(xmin, ymin, xmax, ymax)``, max exclusive.
    """
    lo, hi = size_range
    for attempt in itertools.count():  # a figure whose garment falls outside the frame is drawn again (rare)
        # One stream per visual factor, each seeded from (seed, split, index): the bytes do not depend on the
        # worker that draws the image, and changing one label changes only that factor's pixels.
        key = [seed, SPLIT_CODES[split], index, attempt]
        streams = {name: np.random.default_rng([*key, k]) for k, name in enumerate(_STREAMS)}
        h, w = (int(v) for v in streams["scene"].integers(lo, hi + 1, 2))
        img = draw_background(streams["scene"], h, w)
        drawn = draw_figure(streams, img, labels)
        if drawn is not None:
            break
    fig_mask, box = drawn
    img = photograph(streams["camera"], img)
    if not rgba:
        return img, box
    alpha = cv2.GaussianBlur(fig_mask, (3, 3), 0)  # a soft cut-out edge, as matting tools leave
    img[alpha == 0] = 0
    return np.dstack([img, alpha]), box
