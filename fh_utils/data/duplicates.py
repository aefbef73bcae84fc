"""Near-duplicate photos: perceptual hashes of every image of a data root (cached), and the pairs close in them.

Each distinct image file is hashed once, whole (not its box crop): a near-copy that matters is the same photo
saved twice (resized, re-encoded, slightly cropped), and the ST1 and ST2 rows of one photo carry different
boxes, so a crop's hash would differ between them for no reason. Two 64-bit hashes per file (imagehash):

- **pHash** (the DCT of a 32 x 32 grey thumbnail, the signs of its 8 x 8 lowest frequencies) decides: it is
  the one of imagehash's hashes that survives resizing, JPEG re-encoding and a few percent of cropping with few
  flipped bits.
- **dHash** (signs of horizontal gradients of a 9 x 8 thumbnail) is a second check: a pair is a near-copy only
  when both distances are within ``threshold``. pHash alone pairs different garments of one shape on a plain
  catalogue background (only the low frequencies are compared); requiring dHash too drops four in five of
  those pairs on real product photos (``products_b``, pHash within 4 bits: 6,770 pairs, 944 with dHash) and
  none of the re-saved copies.

Both hashes are grey: a colour variant of a garment shot in the same pose looks like a copy to them (see
:func:`find_pairs` for how often, and the gallery of notebook 01 to judge the pairs).

The hashes are cached in ``image_hashes.json`` in the data root's cache folder (``<root>_cache``, see
:func:`fh_utils.paths.derived_dir`; never inside the raw data), keyed by the file's path, size and mtime, so a
14,000-photo data set is decoded once and a changed file is hashed again. Pairs are found by XOR and popcount of
the packed hashes, a block of rows against all later ones at a time: 14,000 x 14,000 takes about a second.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from fh_utils.data.cache import reduce_factor
from fh_utils.data.images import ImageLoadError, image_size, load_image
from fh_utils.data.reader import DataProblem, DataValidationError, find_data_dir, read_split
from fh_utils.io import read_json, write_json
from fh_utils.paths import derived_dir
from fh_utils.tasks import get_task

log = logging.getLogger(__name__)

HASH_VERSION = 1  # bump when what a stored hash means changes (method, decode size): old entries are ignored
HASH_FILE = "image_hashes.json"
DECODE_SIDE = 64  # JPEGs are decoded at the largest DCT reduction keeping the short side >= this (hashes use 32 px)
DEFAULT_THRESHOLD = 4  # bits of 64, of pHash and of dHash; see find_pairs
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # what a test folder's images may be
SAVE_EVERY = 2000  # hashes between saves of the cache: an interrupted first pass keeps most of its work


def hash_file(path: str | Path) -> tuple[str, str]:
    """The pHash and dHash (64 bits each, as 16 hex digits) of the whole image at ``path``.

    Raises:
        ImageLoadError: The file is missing, truncated or not an image.
    """
    width, height = image_size(path)
    img = load_image(path, reduce=reduce_factor(min(width, height), DECODE_SIDE))
    pil = Image.fromarray(img)
    return str(imagehash.phash(pil)), str(imagehash.dhash(pil))


def _hash_or_error(path: str) -> tuple[str, str] | str:
    try:
        return hash_file(path)
    except ImageLoadError as err:
        return str(err)


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class HashResult:
    """Hashes of a list of files, in its order.

    Attributes:
        paths: The files (as given).
        phash: ``uint64`` pHash of each file (0 where ``ok`` is False).
        dhash: ``uint64`` dHash of each file.
        ok: Whether the file could be hashed.
        errors: ``{path: why}`` for the files that could not.
        hashed: How many files were decoded now (the rest came from the cache).
    """

    paths: list[str]
    phash: np.ndarray
    dhash: np.ndarray
    ok: np.ndarray
    errors: dict[str, str]
    hashed: int


def _to_uint64(hexes: Iterable[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def _read_cache(path: Path) -> dict[str, list]:
    try:
        stored = read_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:  # a damaged cache only costs a re-hash
        log.warning("ignoring unreadable hash cache %s (%s)", path, err)
        return {}
    if stored.get("version") != HASH_VERSION or not isinstance(stored.get("entries"), dict):
        return {}
    return stored["entries"]


def hash_files(
    paths: list[str | Path],
    cache_dir: str | Path | None,
    workers: int = 0,
    progress: bool = True,
    hasher: Callable[[str], tuple[str, str] | str] = _hash_or_error,
) -> HashResult:
    """The pHash and dHash of every file, from ``<cache_dir>/image_hashes.json`` where its path, size and mtime match.

    Args:
        paths: Image files.
        cache_dir: Folder of the hash cache (created when needed); None hashes everything and stores nothing.
        workers: Processes decoding in parallel (0 or 1: this process).
        progress: Show a progress bar while hashing.
        hasher: What hashes one file (tests count its calls); must be picklable when ``workers > 1``.

    Returns:
        The hashes, in the order of ``paths``; unreadable files are listed in ``errors``, not raised.
    """
    keys = [str(Path(p).resolve()) for p in paths]
    cache_path = Path(cache_dir) / HASH_FILE if cache_dir is not None else None
    entries = _read_cache(cache_path) if cache_path is not None else {}
    stats = {k: _stat_key(k) for k in dict.fromkeys(keys)}
    todo = [k for k, st in stats.items() if st is not None and entries.get(k, [None] * 4)[:2] != list(st)]
    errors = {k: f"{k}: file not found" for k, st in stats.items() if st is None}

    def store(done: int) -> None:
        if cache_path is not None and done:
            write_json(cache_path, {"version": HASH_VERSION, "decode_side": DECODE_SIDE, "entries": entries})

    if todo:
        bar = tqdm(total=len(todo), desc="hashing images", unit="img", disable=not progress, mininterval=1.0)
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        results = pool.map(hasher, todo, chunksize=64) if pool is not None else map(hasher, todo)
        try:
            for done, (key, res) in enumerate(zip(todo, results), start=1):
                if isinstance(res, str):
                    errors[key] = res
                    entries.pop(key, None)
                else:
                    entries[key] = [*stats[key], *res]
                bar.update()
                if done % SAVE_EVERY == 0:
                    store(done)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        store(len(todo))
    ok = np.array([k in entries and k not in errors for k in keys], dtype=bool)
    phash = _to_uint64(entries[k][2] if good else "0" for k, good in zip(keys, ok))
    dhash = _to_uint64(entries[k][3] if good else "0" for k, good in zip(keys, ok))
    return HashResult([str(p) for p in paths], phash, dhash, ok, errors, len(todo))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of ``uint64`` hashes (broadcast)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int16)


def find_pairs(
    phash: np.ndarray,
    dhash: np.ndarray | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    dhash_threshold: int | None = None,
    block: int = 1024,
) -> pd.DataFrame:
    """Every pair ``i < j`` whose pHash distance (and dHash distance, when given) is within the thresholds.

    The default, 4 of 64 bits, measured on 100 real product photos (224 px, ``products_b``) copied four ways: a
    copy resized to half or re-encoded at JPEG quality 40 stays within 3 bits of both hashes (all of them); one
    cropped 2 % on every side is found at 4 bits half the time (79 % at 6 bits, 96 % at 8), one cropped 3 % on two
    sides and resized to 70 % 8 % of the time (25 % at 6, 47 % at 8). Unrelated photos sit near 32 bits, but on
    white-background catalogue photos different garments shot in the same pose come close: of all pairs of
    products_b's 5,913 photos, 4 bits pairs 0.005 % (944; 11 % of its val photos get a "copy" in train), 6 bits
    0.03 % (27 %), 8 bits 0.12 % (51 %). 4 keeps the report to re-saved photos and the closest look-alikes;
    raise it to catch crops on photos less alike than a catalogue's.

    Args:
        phash: ``uint64`` pHashes.
        dhash: ``uint64`` dHashes of the same images (None: pHash alone decides).
        threshold: Largest pHash distance of a pair, in bits (0: identical hashes only).
        dhash_threshold: Largest dHash distance (None: ``threshold``).
        block: Rows compared at once against all later ones (memory: ``block x n`` distances).

    Returns:
        Columns ``i``, ``j`` (positions), ``distance`` (pHash bits) and ``dhash_distance`` (when ``dhash``),
        sorted by distance.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 bits, got {threshold}")
    phash = np.asarray(phash, dtype=np.uint64)
    d_limit = threshold if dhash_threshold is None else dhash_threshold
    found_i, found_j = [], []
    n = len(phash)
    for start in range(0, n, block):
        rows = phash[start : start + block]
        dist = hamming(rows[:, None], phash[None, start + 1 :])  # row r against images start+1+c
        # keep j > i only: column c is image start + 1 + c, row r is image start + r
        near = (dist <= threshold) & (np.arange(start + 1, n)[None, :] > np.arange(start, start + len(rows))[:, None])
        r, c = np.nonzero(near)
        found_i.append(start + r)
        found_j.append(start + 1 + c)
    i = np.concatenate(found_i) if found_i else np.zeros(0, dtype=np.int64)
    j = np.concatenate(found_j) if found_j else np.zeros(0, dtype=np.int64)
    out = pd.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "distance": hamming(phash[i], phash[j])})
    if dhash is not None:
        dhash = np.asarray(dhash, dtype=np.uint64)
        out["dhash_distance"] = hamming(dhash[i], dhash[j])
        out = out[out["dhash_distance"] <= d_limit]
    return out.sort_values(["distance", "i", "j"], kind="stable").reset_index(drop=True)


def _test_images(data_dir: Path) -> list[str]:
    """The images of the test folder, relative to it (every image file: a test CSV may be absent)."""
    folder = data_dir / "test"
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)  # fmt: skip


def image_pools(data_root: str | Path, tasks: tuple[str, ...] = ("st1", "st2")) -> pd.DataFrame:
    """Which pool lists which image: one row per (pool, image).

    A pool is a task's split (``"st1/train"``, ``"st2/val"``, from its CSV) or ``"test"`` (every image of the
    test folder, when there is one). The ST1 and ST2 CSVs draw on the same ``train/`` and ``val/`` folders, so
    one file can sit in several pools.

    Returns:
        Columns ``pool``, ``task`` (``""`` for test), ``split``, ``image_name``, ``path`` (absolute).

    Raises:
        DataValidationError: No CSV under ``data_root``, or a CSV that cannot be read at all.
    """
    data_dir = find_data_dir(data_root).resolve()
    parts = []
    for name in tasks:
        task = get_task(name, data_root)
        for split in ("train", "val"):
            if not (data_dir / task.csv_name(split)).is_file():
                continue
            # Bad rows are the validator's business (`python -m fh_utils validate`); here they are only skipped.
            df = read_split(data_root, task, split, on_error="skip", check_images=False)
            names = df["image_name"].drop_duplicates()
            parts.append(pd.DataFrame({"pool": f"{name}/{split}", "task": name, "split": split, "image_name": names,
                                       "path": [str(data_dir / split / n) for n in names]}))  # fmt: skip
    test = _test_images(data_dir)
    if test:
        parts.append(pd.DataFrame({"pool": "test", "task": "", "split": "test", "image_name": test,
                                   "path": [str(data_dir / "test" / n) for n in test]}))  # fmt: skip
    if not parts:
        msg = f"no train or val CSV of {', '.join(tasks)} and no test folder"
        raise DataValidationError([DataProblem(str(data_dir), None, msg)])
    return pd.concat(parts, ignore_index=True)


@dataclass
class NearDuplicates:
    """What :func:`find_near_duplicates` found.

    Attributes:
        images: One row per distinct file: ``path``, ``split``, ``image_name``, ``pools`` (comma-separated),
            ``phash``, ``dhash`` (hex), ``ok`` (hashed).
        memberships: :func:`image_pools`'s rows, with ``image`` (the row of ``images``).
        pairs: One row per pair of distinct files within the thresholds: ``a``, ``b`` (rows of ``images``),
            ``split_a``, ``split_b``, ``image_a``, ``image_b``, ``pools_a``, ``pools_b``, ``distance`` (pHash
            bits), ``dhash_distance``.
        threshold: The pHash threshold used (bits).
        hashed: Files decoded in this call (the rest came from the cache).
        errors: ``{path: why}`` of the files that could not be hashed.
    """

    images: pd.DataFrame
    memberships: pd.DataFrame
    pairs: pd.DataFrame
    threshold: int
    hashed: int
    errors: dict[str, str]


def find_near_duplicates(
    data_root: str | Path,
    threshold: int = DEFAULT_THRESHOLD,
    dhash_threshold: int | None = None,
    tasks: tuple[str, ...] = ("st1", "st2"),
    cache_dir: str | Path | None = "",
    workers: int = 0,
    progress: bool = True,
) -> NearDuplicates:
    """Hash every image of ``data_root``'s pools (cached) and pair the near-copies among distinct files.

    Args:
        data_root: Data root in the FASHION-HOW layout.
        threshold: Largest pHash distance of a pair, in bits (see :func:`find_pairs`).
        dhash_threshold: Largest dHash distance (None: ``threshold``).
        tasks: Tasks whose train and val CSVs make the pools (the test folder is always included when present).
        cache_dir: Folder of the hash cache; ``""``: the data root's cache folder (``<root>_cache``), None: no cache.
        workers: Decoding processes for the first pass (0: this one).
        progress: Show a progress bar while hashing.

    Returns:
        A :class:`NearDuplicates`. A file listed by two pools is one image (the same file, not a pair).
    """
    memberships = image_pools(data_root, tasks)
    files = memberships.drop_duplicates("path")[["path", "split", "image_name"]].reset_index(drop=True)
    pools = memberships.groupby("path", sort=False)["pool"].agg(lambda s: ",".join(dict.fromkeys(s)))
    files["pools"] = files["path"].map(pools)
    if cache_dir == "":
        cache_dir = derived_dir(data_root, "cache")
    hashes = hash_files(files["path"].tolist(), cache_dir, workers=workers, progress=progress)
    files["phash"] = [f"{h:016x}" for h in hashes.phash.tolist()]
    files["dhash"] = [f"{h:016x}" for h in hashes.dhash.tolist()]
    files["ok"] = hashes.ok
    if hashes.errors:
        log.warning("%d image(s) could not be hashed, e.g. %s", len(hashes.errors), next(iter(hashes.errors.values())))
    good = np.flatnonzero(hashes.ok)
    found = find_pairs(hashes.phash[good], hashes.dhash[good], threshold, dhash_threshold)
    a, b = good[found["i"].to_numpy()], good[found["j"].to_numpy()]
    side = {s: files.iloc[idx].reset_index(drop=True) for s, idx in (("a", a), ("b", b))}
    pairs = pd.DataFrame({"a": a, "b": b})
    for col, src in (("split", "split"), ("image", "image_name"), ("pools", "pools")):
        for s in ("a", "b"):
            pairs[f"{col}_{s}"] = side[s][src]
    pairs["distance"] = found["distance"].to_numpy()
    pairs["dhash_distance"] = found["dhash_distance"].to_numpy()
    memberships = memberships.assign(image=memberships["path"].map(pd.Series(files.index, index=files["path"])))
    return NearDuplicates(files, memberships, pairs, threshold, hashes.hashed, hashes.errors)
