"""Removing the background of one image: which method runs, and the fill of what it removes."""

from __future__ import annotations

import importlib.util

import numpy as np

from fh_utils.prep.background.grabcut import BoxLike, grabcut_mask
from fh_utils.prep.background.rembg import (
    RembgModelMissingError,
    missing_model_message,
    rembg_available,
    rembg_mask,
    rembg_model_path,
)

METHODS = ("auto", "grabcut", "rembg")


def resolve_method(method: str = "auto", model_name: str = "u2net") -> str:
    """Return ``"rembg"`` or ``"grabcut"``: what ``method`` means now (``auto``: rembg if its model is here).

    Raises:
        ValueError: Unknown method.
        ImportError: ``method="rembg"`` but rembg is not installed.
        RembgModelMissingError: ``method="rembg"`` but the model file is not on disk.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "rembg" if rembg_available(model_name) else "grabcut"
    if method == "rembg" and importlib.util.find_spec("rembg") is None:
        raise ImportError("method='rembg' needs the rembg package: pip install 'rembg[cpu]'")
    if method == "rembg" and not rembg_model_path(model_name).is_file():
        raise RembgModelMissingError(missing_model_message(model_name))
    return method


def blend_fill(img: np.ndarray, mask: np.ndarray, fill: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Blend ``img`` towards ``fill`` where the soft ``mask`` (255 = keep) is below 255."""
    m = mask.astype(np.uint16)[..., None]
    bg = np.asarray(fill, dtype=np.uint16)[None, None, :]
    return ((img.astype(np.uint16) * m + bg * (255 - m) + 127) // 255).astype(np.uint8)


def remove_background(
    img: np.ndarray,
    box: BoxLike,
    method: str = "auto",
    model_name: str = "u2net",
    work_size: int | None = 320,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the background of ``img`` by ``fill``.

    Args:
        img: ``(H, W, 3)`` RGB uint8 image.
        box: Garment box (or boxes), see :func:`grabcut_mask`; used by GrabCut only.
        method: ``"grabcut"``, ``"rembg"`` or ``"auto"`` (rembg when its model file is on disk, else GrabCut).
        model_name: rembg model.
        work_size: GrabCut working long side (``None``: full resolution).
        fill: RGB colour of the background.

    Returns:
        ``(rgb, mask)``: the new image and the uint8 mask (255 = foreground).
    """
    if resolve_method(method, model_name) == "rembg":
        mask = rembg_mask(img, model_name)
    else:
        mask = grabcut_mask(img, box, work_size=work_size)
    return blend_fill(img, mask, fill), mask
