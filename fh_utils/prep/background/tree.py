"""The mirrored "no background" tree: written atomically and resumably, and sampled for a before/after view."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fh_utils.data.images import load_image
from fh_utils.io import TMP_SUFFIX
from fh_utils.paths import derived_dir
from fh_utils.prep.background.jobs import list_jobs, make_settings
from fh_utils.prep.background.manifest import manifest_view, prepare_out_root
from fh_utils.prep.background.workers import run_jobs


def _check_out_root(out_root: Path, data_root: Path) -> None:
    """Refuse an output folder that is, holds or lies inside the raw data (raw data is never touched)."""
    out, src = out_root.resolve(), data_root.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ValueError(f"out_root {out} overlaps the data root {src}; derived images go beside it")


def _remove_tmp_files(out_root: Path) -> int:
    """Delete temp files left by a killed run (one run per out_root at a time is assumed)."""
    stale = [p for p in out_root.rglob(f"*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


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
    settings = make_settings(method, model_name, work_size, fill)
    jobs = list_jobs(data_root)[:limit]
    _check_out_root(out_root, data_root)
    prepare_out_root(out_root, manifest_view(settings, data_root.resolve()), overwrite)
    _remove_tmp_files(out_root)
    todo = [j for j in jobs if not (out_root / j.rel).exists()]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    failures = run_jobs(todo, out_root, settings, n_workers, progress)
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
    done = [j for j in list_jobs(data_root) if (out_root / j.rel).is_file()]
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
