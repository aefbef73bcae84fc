"""Image loading: one decoder for every image the workbook reads.

Decisions (documented in the README):

* Output is always RGB ``uint8`` of shape ``(H, W, 3)``.
* Transparent images (RGBA, LA, palette PNGs with a transparent colour) are composited onto
  ``background`` (default white, :data:`DEFAULT_BACKGROUND`): product photos are shot on white, and a
  fixed colour keeps the garment's own colour intact for the colour task.
* Grayscale is replicated to three channels; 16-bit images are scaled to 8 bits.
* EXIF orientation is **ignored**: the CSV boxes are pixel coordinates of the stored image (the official
  baseline crops with PIL without ``exif_transpose``), so rotating would move the garment out of its box.
* Zero-byte, truncated, corrupt and non-image files raise :class:`ImageLoadError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageLoadError(OSError):
    """An image file cannot be decoded; the message names the file and the reason."""


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ImageLoadError(f"{path}: file not found") from err
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot read ({err})") from err
    if not data:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse truncated JPEG/PNG files, which OpenCV would otherwise decode partially without an error."""
    if data.startswith(_JPEG_MAGIC):
        if b"\xff\xd9" in data[-64:]:
            return
        # Some cameras append data after the end-of-image marker: accept a marker anywhere after the last
        # start-of-scan (scan data byte-stuffs 0xFF, so the marker cannot occur inside it).
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda") or b"\xff\xd9" not in data:
            raise ImageLoadError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif data.startswith(_PNG_MAGIC):
        if b"IEND" not in data[-32:]:
            raise ImageLoadError(f"{path}: truncated PNG (no IEND chunk)")


def _to_rgb8(img: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Convert any OpenCV decode result (gray, BGR, BGRA, 8/16 bit) to RGB uint8."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # gray + alpha
        gray, alpha = img[:, :, 0], img[:, :, 1]
        return _composite(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), alpha, background)
    if channels == 4:
        rgb = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
        return _composite(rgb, img[:, :, 3], background)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32)[None, None, :]
    return (rgb.astype(np.float32) * a + bg * (1.0 - a) + 0.5).astype(np.uint8)


def load_image(
    path: str | Path,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    reduce: int = 1,
) -> np.ndarray:
    """Decode an image file to RGB uint8.

    Args:
        path: Image file (jpg or png, whatever its extension says).
        background: RGB colour that transparent pixels are composited onto.
        reduce: 1, 2, 4 or 8: decode JPEGs at 1/reduce of their size (libjpeg's DCT scaling, much faster
            than decoding in full and resizing). Ignored for other formats, which are resized instead.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageLoadError: The file is missing, empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    data = _read_bytes(path)
    _check_complete(path, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    is_jpeg = data.startswith(_JPEG_MAGIC)
    if is_jpeg and reduce in _REDUCED_FLAGS:
        img = cv2.imdecode(buf, _REDUCED_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
        reduce = 1
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.size == 0:
        raise ImageLoadError(f"{path}: not a decodable image (corrupt, or not a JPEG/PNG file)")
    rgb = _to_rgb8(img, background)
    if reduce > 1:
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (max(1, w // reduce), max(1, h // reduce)), interpolation=cv2.INTER_AREA)
    return rgb


def image_size(path: str | Path) -> tuple[int, int]:
    """Return ``(width, height)`` of the stored image by reading its header (and its last bytes) only.

    The end of the file is checked as :func:`load_image` does, so a truncated JPEG/PNG is refused here
    too: whatever passes validation decodes.

    Raises:
        ImageLoadError: The file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageLoadError(f"{path}: empty file (0 bytes)")
        with path.open("rb") as f:
            head = f.read(len(_PNG_MAGIC))
            f.seek(max(len(head), size - 64))
            tail = f.read()
        try:
            _check_complete(path, head + tail)  # the magic and the last bytes settle almost every file
        except ImageLoadError:
            _check_complete(path, path.read_bytes())  # a JPEG with a trailer needs the whole file
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError as err:
        raise ImageLoadError(f"{path}: file not found") from err
    except ImageLoadError:
        raise
    except Exception as err:  # PIL raises several unrelated types for bad files
        raise ImageLoadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err


def crop_box(
    img: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    """Crop ``box`` (xmin, ymin, xmax, ymax; xmax/ymax exclusive) enlarged by ``margin`` of its size.

    Args:
        img: ``(H, W, C)`` image.
        box: Box in the coordinates of the stored image.
        margin: Fraction of the box width/height added on each side (clipped to the image).
        scale: Factor from stored-image coordinates to ``img`` coordinates (``1/reduce`` after a reduced
            decode).

    Returns:
        The crop (a view of ``img``).
    """
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, ya = max(0, int(x0 - mx)), max(0, int(y0 - my))
    xb, yb = min(w, int(round(x1 + mx))), min(h, int(round(y1 + my)))
    if xb <= xa or yb <= ya:
        return img
    return img[ya:yb, xa:xb]


def letterbox(img: np.ndarray, size: int | None, pad_value: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad to a square (the winners' preprocessing; the content centred).

    The longer side becomes ``size`` (one INTER_AREA resize, as the stretch does), the shorter one
    ``round(shorter * size / longer)`` (at least 1 px); the rest is ``pad_value``, split evenly with the odd pixel
    after the content (bottom or right).

    Args:
        img: ``(H, W, 3)`` uint8 image (a crop).
        size: Side of the square output, px; ``None`` pads to the longer side without resizing.
        pad_value: RGB colour of the padding.

    Returns:
        ``(size, size, 3)`` uint8 array (a new array, never a view of ``img``).
    """
    h, w = img.shape[:2]
    side = max(h, w) if size is None else int(size)
    if h >= w:
        nh, nw = side, max(1, int(w * side / h + 0.5))
    else:
        nh, nw = max(1, int(h * side / w + 0.5)), side
    content = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.empty((side, side, img.shape[2]), dtype=np.uint8)
    out[:] = np.asarray(pad_value, dtype=np.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    out[top : top + nh, left : left + nw] = content
    return out
