"""Decode once: image sources that give the Dataset its crops, from the files or from a crop cache.

Real FASHION-HOW photos are large (boxes up to 2,744 px) and a training step on a small model needs a crop
of a few hundred pixels. :class:`FileSource` decodes JPEGs at a reduced size when the crop allows it;
:class:`CachedSource` does that once per image and stores the crop, resized to the training size plus
headroom, as a small ``.npy`` file keyed by the source path, size, mtime, box and the cache parameters, so
a changed source or parameter simply misses the cache.

One preprocessing, two paths: :func:`fh_utils.data.datasets.build_source` gives a :class:`FileSource` the
same ``size`` as the cache, so decoding a file (notebook 05, ``cache=False``) returns exactly the array the
cache stores (decode at the same reduction, crop, one INTER_AREA resize to the cache side), and the
transform's resize to the input size follows either way: the validation score in ``metrics.json`` and the
submission's score agree bit for bit (``tests/test_preprocessing.py``). What the cache stores did not change
with this, so ``CACHE_VERSION`` stays 1.

``resize="letterbox"`` (:attr:`fh_utils.data.config.DataConfig.resize`) letterboxes the crop to the cache side
instead of stretching it (:func:`fh_utils.data.images.letterbox`), in both paths; the transform's resize of that
square to the input size then keeps the aspect. The letterbox and its pad colour are part of the entry key; a
stretch entry's key leaves them out, so the caches built before them keep hitting.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from fh_utils.data.images import DEFAULT_BACKGROUND, crop_box, letterbox, load_image

CACHE_VERSION = 1
HEADROOM = 1.15


@dataclass(frozen=True)
class CropSpec:
    """What a source must produce for one row.

    Attributes:
        path: Image file.
        box: (xmin, ymin, xmax, ymax) in stored-image pixels.
    """

    path: str
    box: tuple[int, int, int, int]


def reduce_factor(extent: int, target: int) -> int:
    """Largest JPEG DCT scale (1, 2, 4, 8) that keeps ``extent`` px at or above ``target`` px."""
    factor = 1
    for f in (2, 4, 8):
        if extent // f >= target:
            factor = f
    return factor


class FileSource:
    """Decode each crop from its file every time it is asked for (the seed's way, with reduced decoding).

    Args:
        specs: One :class:`CropSpec` per row.
        margin: Fraction of the box size added around it.
        target_size: Side the crop will be resized to; JPEGs are decoded at 1/2, 1/4 or 1/8 scale while the
            crop stays at least this large. ``None`` decodes at full size.
        background: Colour transparent pixels are composited onto.
        size: Resize every crop (or whole image) to ``size x size`` with INTER_AREA, as the cache stores it;
            ``None`` returns it at its decoded size.
        resize: ``"stretch"`` (resize to the square) or ``"letterbox"`` (keep the aspect, pad to the square;
            without ``size`` padded at its decoded size).
        pad_value: RGB pad colour of the letterbox.
    """

    def __init__(
        self,
        specs: list[CropSpec],
        margin: float = 0.0,
        target_size: int | None = None,
        background: tuple[int, int, int] = DEFAULT_BACKGROUND,
        size: int | None = None,
        resize: str = "stretch",
        pad_value: tuple[int, int, int] = (0, 0, 0),
    ):
        self.specs = specs
        self.margin = margin
        self.target_size = target_size
        self.background = background
        self.size = size
        self.resize = resize
        self.pad_value = tuple(pad_value)

    def __len__(self) -> int:
        return len(self.specs)

    def get(self, index: int, crop: bool) -> np.ndarray:
        """Return the RGB uint8 crop (``crop=True``) or whole image of row ``index`` (``size`` square if set)."""
        spec = self.specs[index]
        x0, y0, x1, y1 = spec.box
        reduce = 1
        if self.target_size:
            # The box size bounds the reduction for crops; the whole image is at least as large as the box.
            extent = min(x1 - x0, y1 - y0)
            reduce = reduce_factor(extent, self.target_size)
        img = load_image(spec.path, background=self.background, reduce=reduce)
        if crop:
            img = crop_box(img, spec.box, margin=self.margin, scale=1.0 / reduce)
        if self.resize == "letterbox":
            return letterbox(img, self.size or None, self.pad_value)
        if self.size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return img


@dataclass(frozen=True)
class CacheParams:
    """Parameters that define a cache entry besides its source (all part of the key, see :func:`key_params`)."""

    size: int
    margin: float
    background: tuple[int, int, int] = DEFAULT_BACKGROUND
    version: int = CACHE_VERSION
    resize: str = "stretch"
    pad_value: tuple[int, int, int] = (0, 0, 0)


def key_params(params: CacheParams) -> dict:
    """The parameters an entry's key holds: all of them, less the letterbox's for a stretch entry.

    A stretch entry never reads the pad colour, and leaving both out keeps the keys of caches built before the
    letterbox existed.
    """
    values = asdict(params)
    if params.resize == "stretch":
        del values["resize"], values["pad_value"]
    return values


def cache_size_for(img_size: int) -> int:
    """Side stored in the cache for a training size: headroom for scale/shift augmentation."""
    return int(round(img_size * HEADROOM))


def file_source_for(specs: list[CropSpec], params: CacheParams) -> FileSource:
    """The :class:`FileSource` that computes exactly what a cache with ``params`` stores.

    Same decode reduction, margin, background and resize (or letterbox), so cached and uncached crops are equal
    bit for bit.
    """
    return FileSource(specs, margin=params.margin, target_size=params.size, background=params.background,
                      size=params.size, resize=params.resize, pad_value=params.pad_value)  # fmt: skip


def _entry_key(spec: CropSpec, crop: bool, params: CacheParams) -> str:
    st = os.stat(spec.path)
    ident = json.dumps(
        [os.path.abspath(spec.path), st.st_size, st.st_mtime_ns, list(spec.box), crop, key_params(params)],
        sort_keys=True,
    )
    return hashlib.sha1(ident.encode()).hexdigest()


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    from fh_utils.io import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a path
            np.save(fh, arr, allow_pickle=False)

    atomic_write(path, write)


class CachedSource:
    """Serve crops from a decode-once cache folder, building missing entries on first use.

    Args:
        specs: One :class:`CropSpec` per row.
        cache_dir: Folder of ``.npy`` entries (shared by all splits and runs with the same parameters).
        params: Cache parameters (stored side, margin, background).
    """

    def __init__(self, specs: list[CropSpec], cache_dir: str | Path, params: CacheParams):
        self.specs = specs
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.params = params
        # The one preprocessing: an entry is exactly what a FileSource of the same size computes.
        self._files = file_source_for(specs, params)

    def __len__(self) -> int:
        return len(self.specs)

    def entry_path(self, index: int, crop: bool) -> Path:
        """Cache file of row ``index`` (crop or whole image)."""
        key = _entry_key(self.specs[index], crop, self.params)
        return self.cache_dir / key[:2] / f"{key}.npy"

    def build(self, index: int, crop: bool) -> np.ndarray:
        """Decode, crop, resize and store one entry; return it."""
        img = self._files.get(index, crop)
        path = self.entry_path(index, crop)
        path.parent.mkdir(exist_ok=True)
        _atomic_save(path, img)
        return img

    def get(self, index: int, crop: bool) -> np.ndarray:
        """Return the cached RGB uint8 ``(size, size, 3)`` crop or whole image of row ``index``."""
        path = self.entry_path(index, crop)
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, EOFError):
            return self.build(index, crop)


def _build_chunk(args: tuple) -> int:
    specs, cache_dir, params, crops = args
    cv2.setNumThreads(1)
    source = CachedSource(specs, cache_dir, params)
    built = 0
    for i in range(len(specs)):
        for crop in crops:
            if not source.entry_path(i, crop).exists():
                source.build(i, crop)
                built += 1
    return built


def build_cache(
    specs: list[CropSpec],
    cache_dir: str | Path,
    params: CacheParams,
    crops: tuple[bool, ...] = (True,),
    workers: int | None = None,
    progress: bool = True,
) -> int:
    """Fill the cache for every row ahead of training, in parallel; return the number of entries built.

    Args:
        specs: Rows to cache.
        cache_dir: Cache folder.
        params: Cache parameters.
        crops: Which variants to store: ``(True,)`` crops only, ``(True, False)`` also whole images (needed
            when the crop probability is below 1).
        workers: Processes (default: all cores).
        progress: Show a progress bar.
    """
    workers = workers or os.cpu_count() or 1
    chunk = 64
    jobs = [(specs[i : i + chunk], str(cache_dir), params, crops) for i in range(0, len(specs), chunk)]
    built = 0
    bar = tqdm(total=len(specs), desc="cache", unit="img", disable=not progress)
    if workers <= 1:
        for job in jobs:
            built += _build_chunk(job)
            bar.update(len(job[0]))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for job, n in zip(jobs, pool.map(_build_chunk, jobs)):
                built += n
                bar.update(len(job[0]))
    bar.close()
    return built
