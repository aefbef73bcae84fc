"""The demo's colours: the 18 garment base colours, skin, hair and trims, and background colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fh_utils.tasks import COLOR

# Korean fashion colour names: "Khaki" is olive, "Ivory" a warm off-white, "Mustard" a dark yellow.
PALETTE: dict[str, tuple[int, int, int]] = {
    "Red": (200, 28, 38),
    "Coral": (242, 118, 98),
    "Orange": (246, 132, 18),
    "Pink": (244, 168, 196),
    "Purple": (118, 58, 150),
    "Brown": (112, 70, 40),
    "Beige": (212, 190, 152),
    "Ivory": (244, 236, 204),
    "Yellow": (250, 218, 40),
    "Mustard": (196, 152, 28),
    "Skyblue": (128, 190, 236),
    "Royalblue": (46, 88, 210),
    "Navy": (24, 34, 82),
    "Green": (38, 138, 68),
    "Khaki": (118, 120, 58),
    "White": (248, 248, 246),
    "Gray": (138, 138, 140),
    "Black": (24, 24, 26),
}
assert tuple(PALETTE) == COLOR, "palette order must follow tasks.COLOR"

SKIN = ((255, 219, 190), (234, 192, 160), (205, 150, 112), (160, 108, 74), (110, 72, 48))
HAIR = ((20, 16, 14), (60, 40, 28), (110, 76, 44), (196, 160, 104), (140, 60, 30))
TRIMS = ((218, 165, 32), (200, 200, 212), (240, 234, 214), (190, 20, 40), (20, 20, 20), (250, 250, 250))


def demo_palette() -> dict[str, tuple[int, int, int]]:
    """Return the 18 garment base colours (RGB), keyed by the Color class names in class-id order."""
    return dict(PALETTE)


def jitter_colour(rng: np.random.Generator, rgb: Sequence[int], sigma: float) -> np.ndarray:
    """``rgb`` plus Gaussian noise of ``sigma`` per channel, clipped to 0..255 (float32)."""
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0.0, sigma, 3), 0, 255).astype(np.float32)


def clutter_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A background colour; a third come from the palette so that "not the background" is no colour cue."""
    if rng.random() < 0.35:
        rgb = jitter_colour(rng, PALETTE[COLOR[rng.integers(len(COLOR))]], 14)
    else:
        rgb = rng.integers(0, 256, 3).astype(np.float32)
        if rng.random() < 0.65:  # most real walls and props are muted
            rgb = rgb * 0.55 + rgb.mean() * 0.45
    return tuple(int(v) for v in rgb)
