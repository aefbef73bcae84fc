"""Multi-colour-space input, as team VCL fed its ST2 network: RGB, HSV, LAB, HLS and YUV stacked.

Conversion happens on uint8 images in the data pipeline (OpenCV, fast); normalisation happens in the model
from the per-channel mean/std returned by :func:`color_space_stats`, so the statistics travel with it.
"""

from __future__ import annotations

import cv2
import numpy as np

ALL_SPACES = ("rgb", "hsv", "lab", "hls", "yuv")
_CONVERSIONS = {
    "hsv": cv2.COLOR_RGB2HSV,
    "lab": cv2.COLOR_RGB2LAB,
    "hls": cv2.COLOR_RGB2HLS,
    "yuv": cv2.COLOR_RGB2YUV,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For the non-RGB spaces (uint8 ranges from OpenCV, divided by 255) a neutral 0.5 / 0.25 is close enough:
# their exact statistics depend on the data and the first layer learns the rest.
_OTHER_MEAN = (0.5, 0.5, 0.5)
_OTHER_STD = (0.25, 0.25, 0.25)


def check_spaces(spaces: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate and normalise a list of colour-space names."""
    spaces = tuple(s.lower() for s in spaces)
    unknown = [s for s in spaces if s not in ALL_SPACES]
    if unknown or not spaces:
        raise ValueError(f"unknown colour space(s) {unknown}; choose from {ALL_SPACES}")
    return spaces


def to_color_spaces(rgb: np.ndarray, spaces: tuple[str, ...] = ("rgb",)) -> np.ndarray:
    """Stack ``rgb`` (uint8 HxWx3) converted to each of ``spaces`` along the channel axis (uint8 HxWx3k)."""
    spaces = check_spaces(spaces)
    if spaces == ("rgb",):
        return rgb
    parts = [rgb if s == "rgb" else cv2.cvtColor(rgb, _CONVERSIONS[s]) for s in spaces]
    return np.concatenate(parts, axis=2)


def color_space_stats(spaces: tuple[str, ...] = ("rgb",)) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std), on the 0..1 scale, for the stacked ``spaces``."""
    mean: list[float] = []
    std: list[float] = []
    for s in check_spaces(spaces):
        mean += IMAGENET_MEAN if s == "rgb" else _OTHER_MEAN
        std += IMAGENET_STD if s == "rgb" else _OTHER_STD
    return tuple(mean), tuple(std)
