"""One image of the mirrored tree: the list of images to do, the run's settings, and making one output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fh_utils.data.images import load_image
from fh_utils.io import write_bytes
from fh_utils.prep.background.grabcut import DEFAULT_CONTEXT, DEFAULT_FEATHER, Box, grabcut_mask
from fh_utils.prep.background.rembg import rembg_mask
from fh_utils.prep.background.remove import blend_fill, resolve_method
from fh_utils.tasks import TASKS

SPLITS = ("train", "val")
BOX_COLUMNS = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Job:
    """One image to make: where it goes, where it comes from, and its garment boxes."""

    rel: str  # "<split>/<image_name>", the path under both the images' parent and out_root
    src: str
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Settings:
    """How a tree is made; recorded in its manifest (field names are the manifest's keys)."""

    method: str
    model_name: str | None
    work_size: int | None
    fill: tuple[int, int, int]
    grabcut: dict | None
    jpeg_quality: int = JPEG_QUALITY


def list_jobs(data_root: str | Path) -> list[Job]:
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
        Job(f"{split}/{name}", str(folder / split / name), tuple(sorted(b)))
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


def process_job(job: Job, out_root: Path, settings: Settings) -> str | None:
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


def make_settings(method: str, model_name: str, work_size: int | None, fill: Sequence[int]) -> Settings:
    """The settings of a run: the method resolved now (``auto`` decided), and only what that method uses."""
    used = resolve_method(method, model_name)
    if used == "rembg":
        return Settings("rembg", model_name, None, _fill_tuple(fill), None)
    grabcut = {"iterations": 5, "feather": DEFAULT_FEATHER, "context": DEFAULT_CONTEXT}
    return Settings("grabcut", None, work_size, _fill_tuple(fill), grabcut)


def _fill_tuple(fill: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(v) for v in fill)
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"fill must be three values in 0..255, got {fill!r}")
    return values  # type: ignore[return-value]
