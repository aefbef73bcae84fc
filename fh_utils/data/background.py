"""Offline background removal: a mirrored "no background" copy of the image tree for training.

Two methods:

* **GrabCut** (OpenCV, always available), seeded with the garment box. It runs on a crop of the box plus
  some context, downscaled to a working size; the mask is scaled back up and feathered. Everything outside
  the box is background by construction, so the garment is kept and the rest is filled.
* **rembg** (the U^2-Net family the top teams used), only when its model file is already on disk: rembg
  downloads models on first use, and this module never lets it (the workbook may run offline). rembg
  segments the salient subject of the whole image; the box is not used.

:func:`create_nobg_tree` writes ``<out_root>/<split>/<image_name>`` for every image of the CSVs (names and
extensions kept), atomically and resumably, with a manifest that records how the tree was made.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fh_utils.data.images import crop_box, load_image
from fh_utils.io import TMP_SUFFIX, write_bytes
from fh_utils.paths import derived_dir
from fh_utils.tasks import TASKS

Box = tuple[int, int, int, int]
BoxLike = Sequence[int] | Sequence[Sequence[int]]

METHODS = ("auto", "grabcut", "rembg")
SPLITS = ("train", "val")
BOX_COLUMNS = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
MANIFEST_NAME = "nobg_manifest.json"
JPEG_QUALITY = 95
REMBG_RELEASES = "https://github.com/danielgatis/rembg/releases"

GRABCUT_SEED = 0
DEFAULT_FEATHER = 3  # Gaussian feather radius of the mask edge, in output pixels
DEFAULT_CONTEXT = 0.25  # fraction of the box size kept around it for GrabCut's background model
_MIN_BOX_SIDE = 8  # below this (working pixels) GrabCut has too little to model: use the box itself
_MIN_FG_FRACTION = 0.02  # GrabCut kept less than this share of the box: it lost the garment, use the box
_MIN_BG_PIXELS = 64  # fewer known-background pixels than this: mark a frame as background

_ORT_THREADS = 0  # onnxruntime intra-op threads (0 = its default); pool workers set 1
_REMBG_SESSIONS: dict[tuple[str, str], Any] = {}


class RembgModelMissingError(FileNotFoundError):
    """The rembg model file is not on disk; the message says where to put it."""


class ManifestMismatchError(ValueError):
    """An output tree was made with other settings than the ones asked for."""


# --------------------------------------------------------------------------------------------- GrabCut


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
            cv2.grabCut(
                bgr, gc, (x0, y0, x1 - x0, y1 - y0), bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_RECT
            )
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


# ----------------------------------------------------------------------------------------------- rembg


def _rembg_candidates(model_name: str) -> list[Path]:
    """Where rembg looks for ``<model_name>.onnx``, in its order (rembg 2.0.x ``BaseSession``).

    ``resolve_existing`` checks ``<rembg home>/models/<name>/<name>.onnx`` and then the legacy flat folder
    ``<legacy home>/<name>.onnx``. Legacy home: ``$U2NET_HOME``, default ``$XDG_DATA_HOME/.u2net`` or
    ``~/.u2net``. Rembg home: ``$U2NET_HOME`` when set, else ``$REMBG_HOME``, default
    ``$XDG_DATA_HOME/rembg`` or ``~/.rembg``.
    """
    xdg = os.getenv("XDG_DATA_HOME")
    legacy = os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(xdg or "~", ".u2net")))
    if os.getenv("U2NET_HOME"):
        home = legacy
    else:
        home = os.path.expanduser(os.getenv("REMBG_HOME", os.path.join(xdg, "rembg") if xdg else "~/.rembg"))
    fname = f"{model_name}.onnx"
    return [Path(home) / "models" / model_name / fname, Path(legacy) / fname]


def _custom_model(model_name: str) -> Path | None:
    """``model_name`` as the path of a U^2-Net-like ``.onnx`` file (rembg's ``u2net_custom`` session), else None."""
    return Path(model_name).expanduser() if str(model_name).endswith(".onnx") else None


def rembg_model_path(model_name: str = "u2net") -> Path:
    """Path of rembg's model file ``<model_name>.onnx`` (or ``model_name`` itself when it is an ``.onnx`` path).

    Follows rembg's own folder rules (see :func:`_rembg_candidates`): the first existing candidate, else
    ``$U2NET_HOME/<model_name>.onnx`` (default ``~/.u2net/``), the folder to copy a model into by hand.
    """
    custom = _custom_model(model_name)
    if custom is not None:
        return custom
    candidates = _rembg_candidates(model_name)
    return next((p for p in candidates if p.is_file()), candidates[-1])


def rembg_available(model_name: str = "u2net") -> bool:
    """Whether rembg is installed and its model file is on disk (nothing is downloaded or imported)."""
    return importlib.util.find_spec("rembg") is not None and rembg_model_path(model_name).is_file()


def _missing_model_message(model_name: str) -> str:
    if _custom_model(model_name) is not None:
        return (f"rembg model file {model_name!r} not found (a custom model must lie in rembg's model folder, "
                "$U2NET_HOME, default ~/.u2net). Otherwise use method='grabcut'.")
    candidates = _rembg_candidates(model_name)
    target = candidates[-1]
    return (
        f"rembg model file {target.name!r} not found; looked in {', '.join(str(p) for p in candidates)}. "
        "rembg would download it on first use, which this workbook never lets it do (it may run offline). "
        f"To use rembg: on a machine with network, download {target.name} from {REMBG_RELEASES} (or run "
        f"rembg there once with model {model_name!r}), copy the file to {target} (the folder is $U2NET_HOME, "
        f"default ~/.u2net: here {target.parent}), or set U2NET_HOME to the folder that holds it. "
        "Otherwise use method='grabcut'."
    )


def _rembg_session(model_name: str) -> Any:
    """The per-process rembg session for ``model_name``, created once; never downloads."""
    path = rembg_model_path(model_name)
    if not path.is_file():
        raise RembgModelMissingError(_missing_model_message(model_name))
    key = (model_name, str(path))
    if key not in _REMBG_SESSIONS:
        import onnxruntime as ort  # heavy imports (rembg takes seconds): only when rembg is really used
        from rembg import new_session
        from rembg.sessions import sessions_class

        custom = _custom_model(model_name) is not None  # a file of the U^2-Net family: rembg's custom session
        session_name = "u2net_custom" if custom else model_name
        cls = next((c for c in sessions_class if c.name() == session_name), None)
        if cls is None:
            raise ValueError(
                f"rembg has no model {model_name!r}; known: {[c.name() for c in sessions_class]}"
            )
        resolve = getattr(cls, "resolve_existing", None)  # rembg >= 2.0.6x
        if not custom and resolve is not None and resolve(f"{model_name}.onnx") is None:
            # Our reading of rembg's folder rules disagrees with this rembg version: it would download.
            raise RembgModelMissingError(_missing_model_message(model_name))
        opts = ort.SessionOptions()
        if _ORT_THREADS:
            opts.intra_op_num_threads = _ORT_THREADS
        # rembg accepts a custom model_path only under its model folders ($U2NET_HOME, ~/.u2net, ~/.rembg).
        extra = {"model_path": os.path.abspath(path)} if custom else {}
        _REMBG_SESSIONS[key] = new_session(session_name, sess_opts=opts, **extra)
    return _REMBG_SESSIONS[key]


def rembg_mask(img: np.ndarray, model_name: str = "u2net") -> np.ndarray:
    """Soft foreground mask of the whole image by rembg, from a model file already on disk.

    Args:
        img: ``(H, W, 3)`` RGB uint8 image.
        model_name: rembg model (U^2-Net family: ``u2net``, ``u2netp``, ``u2net_human_seg``, ``silueta``...),
            or the path of an ``.onnx`` file with U^2-Net's input and outputs inside rembg's model folder
            (``$U2NET_HOME``), run by rembg's ``u2net_custom`` session.

    Returns:
        ``(H, W)`` uint8 mask, 255 = foreground.

    Raises:
        RembgModelMissingError: The model file is not on disk (the message says where to put it).
    """
    from PIL import Image

    session = _rembg_session(model_name)
    masks = session.predict(Image.fromarray(img))
    mask = np.maximum.reduce([np.asarray(m.convert("L"), dtype=np.uint8) for m in masks])
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return mask


# ------------------------------------------------------------------------------------------ one image


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
        raise RembgModelMissingError(_missing_model_message(model_name))
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


# ----------------------------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class _Job:
    rel: str  # "<split>/<image_name>", the path under both the images' parent and out_root
    src: str
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class _Settings:
    method: str
    model_name: str | None
    work_size: int | None
    fill: tuple[int, int, int]
    grabcut: dict | None
    jpeg_quality: int = JPEG_QUALITY


def _list_jobs(data_root: str | Path) -> list[_Job]:
    """Every image of the train/val CSVs once, with the union of its boxes (ST1 and ST2 pools overlap).

    The CSVs are read by the data layer's validated reader (:func:`fh_utils.data.reader.read_split`), so a
    bad box or an ``image_name`` outside the images folder stops the run with a file:line report. Images
    are not opened here: an unreadable or missing one is reported per file by the run, not fatal.
    """
    from fh_utils.data.reader import find_data_dir, read_split  # pandas: not needed by the pool workers

    folder = find_data_dir(data_root)  # the data layer's one rule for where the CSVs live
    boxes: dict[tuple[str, str], set[Box]] = {}
    for name, task in TASKS.items():
        for split in SPLITS:
            if not (folder / task.csv_name(split)).is_file():
                continue
            df = read_split(data_root, name, split, check_images=False)
            for image_name, *box in df[["image_name", *BOX_COLUMNS]].itertuples(index=False, name=None):
                boxes.setdefault((split, image_name), set()).add(tuple(int(v) for v in box))
    return [
        _Job(f"{split}/{name}", str(folder / split / name), tuple(sorted(b)))
        for (split, name), b in sorted(boxes.items())
    ]


def _encode(path: Path, rgb: np.ndarray, jpeg_quality: int) -> bytes:
    """Encode in the format the file's extension names (a ``.png`` stays PNG, a ``.jpg`` JPEG)."""
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext or ".png", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"{path}: cannot encode an image with extension {ext!r}")
    return buf.tobytes()


def _process_job(job: _Job, out_root: Path, settings: _Settings) -> str | None:
    """Make one output image; returns None, or the error text (a bad image must not stop the run)."""
    try:
        img = load_image(job.src)
        if settings.method == "rembg":
            mask = rembg_mask(img, settings.model_name or "u2net")
        else:
            mask = grabcut_mask(img, job.boxes, work_size=settings.work_size, **(settings.grabcut or {}))
        dst = out_root / job.rel
        write_bytes(dst, _encode(dst, blend_fill(img, mask, settings.fill), settings.jpeg_quality))
    except Exception as err:  # reported per file by the caller
        return f"{type(err).__name__}: {err}"
    return None


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(out_root: Path, settings: _Settings) -> None:
    global _ORT_THREADS
    cv2.setNumThreads(1)  # one process per core already: OpenCV's own threads would only contend
    _ORT_THREADS = 1
    _WORKER_STATE.update(out_root=out_root, settings=settings)


def _worker_job(job: _Job) -> str | None:
    return _process_job(job, _WORKER_STATE["out_root"], _WORKER_STATE["settings"])


def _make_settings(method: str, model_name: str, work_size: int | None, fill: Sequence[int]) -> _Settings:
    used = resolve_method(method, model_name)
    if used == "rembg":
        return _Settings("rembg", model_name, None, _fill_tuple(fill), None)
    grabcut = {"iterations": 5, "feather": DEFAULT_FEATHER, "context": DEFAULT_CONTEXT}
    return _Settings("grabcut", None, work_size, _fill_tuple(fill), grabcut)


def _fill_tuple(fill: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(v) for v in fill)
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"fill must be three values in 0..255, got {fill!r}")
    return values  # type: ignore[return-value]


def _manifest_view(settings: _Settings, source_root: Path) -> dict:
    return {"settings": json.loads(json.dumps(asdict(settings))), "source_root": str(source_root)}


def _check_out_root(out_root: Path, data_root: Path) -> None:
    """Refuse an output folder that is, holds or lies inside the raw data (raw data is never touched)."""
    out, src = out_root.resolve(), data_root.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ValueError(f"out_root {out} overlaps the data root {src}; derived images go beside it")


def _prepare_out_root(out_root: Path, view: dict, overwrite: bool) -> None:
    """Check the manifest against this run's settings (or clear the tree), then write the manifest."""
    manifest = out_root / MANIFEST_NAME
    if out_root.exists() and any(out_root.iterdir()):
        if not manifest.is_file():
            raise ValueError(
                f"{out_root} is not empty and has no {MANIFEST_NAME}: not a background-removed tree; "
                "refusing to write into (or clear) it"
            )
        if overwrite:
            shutil.rmtree(out_root)
        else:
            _check_manifest(manifest, view)
    if not manifest.is_file():
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json(manifest, {**view, "created": stamp})


def _check_manifest(manifest: Path, view: dict) -> None:
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestMismatchError(f"{manifest}: unreadable manifest ({err}); use overwrite=True") from err
    old_view = {"settings": old.get("settings"), "source_root": old.get("source_root")}
    if old_view == view:
        return
    old_settings = old_view["settings"] or {}
    diffs = [
        f"{k}: was {old_settings.get(k)!r}, now {v!r}"
        for k, v in view["settings"].items()
        if old_settings.get(k) != v
    ]
    if old_view["source_root"] != view["source_root"]:
        diffs.append(f"source_root: was {old_view['source_root']!r}, now {view['source_root']!r}")
    raise ManifestMismatchError(
        f"{manifest.parent} was made with other settings ({'; '.join(diffs)}). Mixing them would give an "
        "inconsistent tree: use the same settings, another out_root, or overwrite=True to delete it and "
        "start over (if the data only moved, edit source_root in the manifest)."
    )


def _write_json(path: Path, obj: dict) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _remove_tmp_files(out_root: Path) -> int:
    """Delete temp files left by a killed run (one run per out_root at a time is assumed)."""
    stale = [p for p in out_root.rglob(f"*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _run_jobs(
    jobs: list[_Job], out_root: Path, settings: _Settings, workers: int, progress: bool
) -> list[tuple[str, str]]:
    """Process ``jobs`` (serially for one worker, else in a spawn process pool); returns the failures."""
    from tqdm.auto import tqdm

    failures: list[tuple[str, str]] = []
    with tqdm(total=len(jobs), disable=not progress, desc=f"nobg ({settings.method})", unit="img") as bar:
        for job, error in _iter_results(jobs, out_root, settings, workers):
            if error is not None:
                failures.append((job.src, error))
            bar.update(1)
    return failures


def _iter_results(
    jobs: list[_Job], out_root: Path, settings: _Settings, workers: int
) -> Iterable[tuple[_Job, str | None]]:
    if workers <= 1:
        for job in jobs:
            yield job, _process_job(job, out_root, settings)
        return
    # spawn, not fork: the caller (a notebook) may hold threads or CUDA state that a fork would copy. An
    # executor, not multiprocessing.Pool: when a worker dies, Pool waits forever, the executor raises.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(out_root, settings)
    )
    try:
        futures = {pool.submit(_worker_job, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            "a background-removal worker process died (killed for lack of memory, a crash in a decoder, or, "
            "in a script, no `if __name__ == '__main__':` guard around the call, which spawned workers "
            "need). Finished images are kept: rerun to resume, or use workers=1 to find the image."
        ) from err
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on Ctrl-C, do not wait for thousands of images


def create_nobg_tree(
    data_root: str | Path,
    out_root: str | Path | None = None,
    method: str = "auto",
    model_name: str = "u2net",
    work_size: int | None = 320,
    fill: Sequence[int] = (255, 255, 255),
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write a background-removed copy of every train/val image listed in the CSVs.

    Output: ``<out_root>/<split>/<image_name>`` (same names and extensions; JPEGs at quality 95), plus
    ``nobg_manifest.json`` recording how the tree was made. The originals are only read. Resumable:
    existing outputs are skipped, every file is written atomically, and temp files of a killed run are
    removed at start. Run one call per ``out_root`` at a time.

    Args:
        data_root: Folder with the CSVs and ``train/``, ``val/`` (or the same under ``Dataset/``).
        out_root: Output folder; default :func:`fh_utils.paths.derived_dir` ``(data_root, "nobg")``.
        method: ``"auto"``, ``"grabcut"`` or ``"rembg"`` (see :func:`remove_background`).
        model_name: rembg model.
        work_size: GrabCut working long side (``None``: full resolution, slow).
        fill: RGB colour of the removed background.
        workers: Processes (default: all cores); 1 runs in this process. Workers are spawned, not forked,
            so a script must make this call under ``if __name__ == "__main__":`` (notebooks are fine).
        progress: Show a tqdm bar.
        limit: Only the first ``limit`` images (sorted by split and name), for a trial run.
        overwrite: Delete an existing tree (one with a manifest) and start over.

    Returns:
        ``n_total``, ``n_done_now``, ``n_skipped``, ``n_failed``, ``failures`` (``(file, error)`` pairs),
        ``seconds``, ``images_per_s`` (of the images done now), ``method`` (the one used), ``out_root``.

    Raises:
        ManifestMismatchError: ``out_root`` was made with other settings (and ``overwrite`` is False).
        RembgModelMissingError: ``method="rembg"`` without the model file.
    """
    start = time.perf_counter()
    data_root = Path(data_root)
    out_root = Path(out_root) if out_root is not None else derived_dir(data_root, "nobg")
    settings = _make_settings(method, model_name, work_size, fill)
    jobs = _list_jobs(data_root)[:limit]
    _check_out_root(out_root, data_root)
    _prepare_out_root(out_root, _manifest_view(settings, data_root.resolve()), overwrite)
    _remove_tmp_files(out_root)
    todo = [j for j in jobs if not (out_root / j.rel).exists()]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    failures = _run_jobs(todo, out_root, settings, n_workers, progress)
    seconds = time.perf_counter() - start
    n_done = len(todo) - len(failures)
    return {
        "n_total": len(jobs),
        "n_done_now": n_done,
        "n_skipped": len(jobs) - len(todo),
        "n_failed": len(failures),
        "failures": failures,
        "seconds": seconds,
        "images_per_s": n_done / seconds if seconds > 0 else 0.0,
        "method": settings.method,
        "out_root": out_root,
    }


def sample_pairs(
    data_root: str | Path,
    out_root: str | Path | None = None,
    n: int = 8,
    seed: int = 0,
    max_side: int | None = 640,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random ``(original, nobg)`` image pairs for a before/after grid.

    Args:
        data_root: The raw data root.
        out_root: The background-removed tree (default beside ``data_root``).
        n: Number of pairs (fewer if fewer images are done).
        seed: Sampling seed.
        max_side: Downscale both images of a pair to this long side (``None``: full size).

    Returns:
        List of ``(original, nobg)`` RGB uint8 arrays of equal shape.

    Raises:
        FileNotFoundError: No image of ``data_root`` has a background-removed copy yet.
    """
    out_root = Path(out_root) if out_root is not None else derived_dir(data_root, "nobg")
    done = [j for j in _list_jobs(data_root) if (out_root / j.rel).is_file()]
    if not done:
        raise FileNotFoundError(f"no background-removed images in {out_root}; run create_nobg_tree first")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(done), size=min(n, len(done)), replace=False)
    pairs = []
    for i in picks:
        original, nobg = load_image(done[i].src), load_image(out_root / done[i].rel)
        pairs.append((_shrink(original, max_side), _shrink(nobg, max_side)))
    return pairs


def _shrink(img: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = img.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
