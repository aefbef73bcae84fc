"""The demo dataset's entry points: generate it at a folder, or reuse one that matches."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fh_utils.prep.demo.manifest import DEMO_MANIFEST, DEMO_VERSION, build_manifest, read_manifest
from fh_utils.prep.demo.plan import make_plans
from fh_utils.prep.demo.write import make_jobs, run_jobs, write_csvs
from fh_utils.tasks import ST1, ST2


def _check_args(seed: int, scale: float, size_range) -> tuple[int, int]:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    lo, hi = (int(v) for v in size_range)
    if not 64 <= lo <= hi:
        raise ValueError(f"size_range must be (min, max) with 64 <= min <= max, got {size_range!r}")
    return lo, hi


def _replace_dir(tmp: Path, root: Path) -> None:
    """Move the finished tree to ``root``; an old demo tree is renamed aside first, then deleted."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate_demo_dataset(
    root: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    size_range: tuple[int, int] = (400, 900),
    progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Generate the synthetic demo dataset at ``root``, in the exact FASHION-HOW layout.

    The tree is built in a temporary sibling folder and renamed to ``root`` at the end, so an interrupted
    run never leaves a half dataset at ``root``.

    Args:
        root: Folder to create (its parent is created if needed).
        seed: Seed; the same seed and parameters give byte-identical files.
        scale: Multiplies all row counts (1.0: about 1,500 train and 400 val rows per task). Every class
            keeps at least one train row, and ST2 val at least one row per class.
        size_range: Smallest and largest image side, px (e.g. ``(1500, 2500)`` for loader benchmarks).
        progress: Show a progress bar.
        overwrite: Replace an existing demo tree at ``root``. A folder that is not a demo tree is never
            replaced.
        workers: Worker processes (default: 2, or 1 on a single core). Does not change the output. The
            workers are spawned, not forked (safe beside torch threads), so a script that calls this must
            do so under ``if __name__ == "__main__":``; notebooks and ``python -m`` entry points are fine.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``root`` exists and is not empty, and either is not a demo tree or
            ``overwrite`` is False.
        ValueError: Invalid ``seed``, ``scale`` or ``size_range``.
    """
    root = Path(root)
    size_range = _check_args(seed, scale, size_range)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if read_manifest(root) is None:
            raise FileExistsError(f"{root} exists and is not a demo dataset (no {DEMO_MANIFEST}); not replacing it")
        if not overwrite:
            raise FileExistsError(f"{root} already holds a demo dataset; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    plans = make_plans(int(seed), float(scale))
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for split, plan in plans.items():
            for folder in {n.split("/")[0] for n in plan["names"]}:
                (tmp / split / folder).mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(tmp, int(seed), plans, size_range)
        boxes = run_jobs(jobs, workers if workers is not None else min(2, os.cpu_count() or 1), progress)
        write_csvs(tmp, plans, boxes)
        manifest = build_manifest(int(seed), float(scale), size_range, plans)
        (tmp / DEMO_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset should read like any other folder
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _listed_images(root: Path) -> list[Path] | None:
    """Every image the four CSVs list, or None when a CSV is missing or unreadable."""
    paths = []
    for task in (ST1, ST2):
        for split in ("train", "val"):
            try:
                with open(root / task.csv_name(split), newline="", encoding="utf-8") as f:
                    paths += [root / split / row["image_name"] for row in csv.DictReader(f)]
            except (OSError, KeyError, csv.Error):
                return None
    return paths


def _matches(root: Path, seed: int, scale: float, size_range: tuple[int, int]) -> bool:
    manifest = read_manifest(root)
    if manifest is None or manifest.get("version") != DEMO_VERSION:
        return False
    wanted = {"seed": seed, "scale": scale, "size_range": list(size_range)}
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return False
    images = _listed_images(root)
    return images is not None and all(p.is_file() for p in images)


def ensure_demo_dataset(
    root: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    size_range: tuple[int, int] = (400, 900),
    progress: bool = True,
) -> Path:
    """Reuse root if its manifest matches these parameters and every listed image exists, else (re)generate.

    Args:
        root: Demo data folder.
        seed: Seed, as for :func:`generate_demo_dataset`.
        scale: Scale, as for :func:`generate_demo_dataset`.
        size_range: Image side range, as for :func:`generate_demo_dataset`.
        progress: Show a progress bar when generating.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``root`` holds something that is not a demo dataset.
    """
    root = Path(root)
    size_range = _check_args(seed, scale, size_range)
    if _matches(root, int(seed), float(scale), size_range):
        return root
    return generate_demo_dataset(root, seed, scale, size_range, progress=progress, overwrite=True)
