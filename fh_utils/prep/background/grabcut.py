"""GrabCut (OpenCV, always available) seeded with the garment box, on a crop of the box and its context.

GrabCut runs on a crop of the box plus some context, downscaled to a working size; the mask is scaled back up
and feathered. Everything outside the box is background by construction, so the garment is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fh_utils.data.images import crop_box

Box = tuple[int, int, int, int]
BoxLike = Sequence[int] | Sequence[Sequence[int]]

GRABCUT_SEED = 0
DEFAULT_FEATHER = 3  # Gaussian feather radius of the mask edge, in output pixels
DEFAULT_CONTEXT = 0.25  # fraction of the box size kept around it for GrabCut's background model
_MIN_BOX_SIDE = 8  # below this (working pixels) GrabCut has too little to model: use the box itself
_MIN_FG_FRACTION = 0.02  # GrabCut kept less than this share of the box: it lost the garment, use the box
_MIN_BG_PIXELS = 64  # fewer known-background pixels than this: mark a frame as background


def _as_boxes(box: BoxLike, width: int, height: int) -> np.ndarray:
    """Return the non-empty boxes of ``box`` (one box or several) clipped to the image, as ``(k, 4)`` ints."""
    arr = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    arr = arr[np.isfinite(arr).all(axis=1)]
    x0 = np.clip(np.floor(arr[:, 0]), 0, width)
    y0 = np.clip(np.floor(arr[:, 1]), 0, height)
    x1 = np.clip(np.ceil(arr[:, 2]), 0, width)
    y1 = np.clip(np.ceil(arr[:, 3]), 0, height)
    out = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def _box_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 255
    return mask


def _context_region(boxes: np.ndarray, width: int, height: int, context: float | None) -> Box:
    """The union of the boxes enlarged by ``context`` of its size on each side (None: the whole image)."""
    if context is None:
        return 0, 0, width, height
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    mx, my = int(round((x1 - x0) * context)), int(round((y1 - y0) * context))
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def _working_scale(region: Box, boxes: np.ndarray, work_size: int | None) -> float:
    """Downscale factor so the region's long side is ``work_size``, but never making a box side tiny."""
    if work_size is None:
        return 1.0
    long_side = max(region[2] - region[0], region[3] - region[1])
    shortest_box_side = int(min((boxes[:, 2] - boxes[:, 0]).min(), (boxes[:, 3] - boxes[:, 1]).min()))
    scale = max(work_size / long_side, _MIN_BOX_SIDE * 2 / shortest_box_side)
    return min(1.0, scale)


def _init_gc_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """Background everywhere, probable foreground inside the boxes; a frame of background if none is left."""
    mask = np.full(shape, cv2.GC_BGD, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    if np.count_nonzero(mask == cv2.GC_BGD) < _MIN_BG_PIXELS:
        # The box fills the frame: the photo's own border is the best guess of what background looks like.
        b = max(1, round(0.02 * min(shape)))
        mask[:b, :], mask[-b:, :], mask[:, :b], mask[:, -b:] = (cv2.GC_BGD,) * 4
    return mask


def _run_grabcut(small: np.ndarray, boxes: np.ndarray, iterations: int) -> np.ndarray | None:
    """GrabCut on the working image; returns a 0/255 mask, or None when GrabCut cannot model the image."""
    h, w = small.shape[:2]
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    init = _init_gc_mask((h, w), boxes)
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(GRABCUT_SEED)  # GrabCut's k-means draws from cv2's RNG: seed it for repeatable masks
    try:
        if len(boxes) == 1 and _is_rect_init(init, boxes[0]):  # the plain case: GrabCut's own rect init
            x0, y0, x1, y1 = (int(v) for v in boxes[0])
            gc = np.zeros((h, w), np.uint8)
            cv2.grabCut(bgr, gc, (x0, y0, x1 - x0, y1 - y0), bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_RECT)
        else:
            gc = init
            cv2.grabCut(bgr, gc, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return np.where((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)


def _is_rect_init(init: np.ndarray, box: np.ndarray) -> bool:
    """Whether ``init`` is exactly what GC_INIT_WITH_RECT would build from ``box`` (no added frame)."""
    x0, y0, x1, y1 = box
    return int(np.count_nonzero(init == cv2.GC_PR_FGD)) == int((x1 - x0) * (y1 - y0))


def grabcut_mask(
    img: np.ndarray,
    box: BoxLike,
    work_size: int | None = 320,
    iterations: int = 5,
    feather: int = DEFAULT_FEATHER,
    context: float | None = DEFAULT_CONTEXT,
) -> np.ndarray:
    """Foreground mask of the garment in ``box`` by OpenCV GrabCut, computed at a working resolution.

    GrabCut runs on the box plus ``context`` of its size on each side (its background model learns from
    that ring), downscaled so its long side is ``work_size``; the 0/255 result is scaled back with linear
    interpolation and feathered, giving a soft edge. Deterministic: cv2's RNG is seeded before each run.

    Degenerate cases: a box below 8 px, or a GrabCut that fails or keeps under 2 % of the box, gives the
    box itself as the mask; no usable box at all (empty, NaN or outside the image) keeps the whole image.

    Args:
        img: ``(H, W, 3)`` RGB uint8 image.
        box: ``(xmin, ymin, xmax, ymax)`` with xmax/ymax exclusive, in pixels of ``img``; or a sequence of
            such boxes, whose union is the foreground region.
        work_size: Long side of the working image; ``None`` runs at full resolution.
        iterations: GrabCut iterations.
        feather: Gaussian feather radius of the edge, in pixels of ``img`` (0: no feathering).
        context: Margin around the box given to GrabCut, as a fraction of the box size; ``None`` uses
            the whole image (the plain, slow way).

    Returns:
        ``(H, W)`` uint8 mask, 255 = foreground, 0 = background.
    """
    h, w = img.shape[:2]
    boxes = _as_boxes(box, w, h)
    if len(boxes) == 0:
        return np.full((h, w), 255, dtype=np.uint8)
    if min((boxes[:, 2] - boxes[:, 0]).min(), (boxes[:, 3] - boxes[:, 1]).min()) < _MIN_BOX_SIDE:
        return _box_mask((h, w), boxes)
    region = _context_region(boxes, w, h, context)
    rx0, ry0, rx1, ry1 = region
    crop = crop_box(img, region)
    scale = _working_scale(region, boxes, work_size)
    small = crop
    if scale < 1.0:
        size = (max(1, round((rx1 - rx0) * scale)), max(1, round((ry1 - ry0) * scale)))
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    local = _as_boxes((boxes - [rx0, ry0, rx0, ry0]) * scale, small.shape[1], small.shape[0])
    fg = _run_grabcut(small, local, iterations) if len(local) else None
    if fg is None or np.count_nonzero(_box_mask(fg.shape, local) & fg) < _MIN_FG_FRACTION * _area(local):
        return _box_mask((h, w), boxes)
    if fg.shape != crop.shape[:2]:
        fg = cv2.resize(fg, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[ry0:ry1, rx0:rx1] = fg
    return _feather(mask, region, feather)


def _area(boxes: np.ndarray) -> int:
    return int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum())


def _feather(mask: np.ndarray, region: Box, radius: int) -> np.ndarray:
    """Blur the mask edge; only the region (plus the blur's reach) can change, so only it is blurred."""
    if radius <= 0:
        return mask
    h, w = mask.shape
    x0, y0 = max(0, region[0] - radius), max(0, region[1] - radius)
    x1, y1 = min(w, region[2] + radius), min(h, region[3] + radius)
    k = 2 * radius + 1
    mask[y0:y1, x0:x1] = cv2.GaussianBlur(mask[y0:y1, x0:x1], (k, k), 0, borderType=cv2.BORDER_REPLICATE)
    return mask
