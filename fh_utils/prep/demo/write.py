"""Writing the planned tree's files: every image (drawn in worker processes) and the four CSVs."""

from __future__ import annotations

import csv
import multiprocessing as mp
from pathlib import Path

import cv2
from tqdm.auto import tqdm

from fh_utils.prep.demo.render import render_image
from fh_utils.tasks import ST1, ST2

JPEG_QUALITY = 90
_BOX_COLUMNS = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would only contend


def _render_job(job: tuple) -> tuple[str, int, tuple[int, int, int, int]]:
    """Draw one image and write it under the output folder; return its box (runs in a worker)."""
    out_dir, seed, split, index, name, labels, size_range, rgba = job
    img, box = render_image(seed, split, index, labels, size_range, rgba)
    code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
    bgr = cv2.cvtColor(img, code)
    if name.endswith(".png"):
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {name}")
    # imencode + write_bytes: cv2.imwrite mishandles some non-ASCII paths; folder names have spaces.
    (Path(out_dir) / split / name).write_bytes(data.tobytes())
    return split, index, box


def make_jobs(out_dir: Path, seed: int, plans: dict, size_range: tuple[int, int]) -> list[tuple]:
    """One picklable job per planned image, in plan order (a worker draws and writes it)."""
    jobs = []
    for split, plan in plans.items():
        for i, name in enumerate(plan["names"]):
            labels = {k: int(v[i]) for k, v in plan["labels"].items()}
            jobs.append((str(out_dir), seed, split, i, name, labels, size_range, bool(plan["rgba"][i])))
    return jobs


def run_jobs(jobs: list[tuple], workers: int, progress: bool) -> dict[tuple[str, int], tuple]:
    """Draw and write every image, in this process or in ``workers`` spawned ones.

    Returns:
        The garment box of each image, keyed by ``(split, index)``.
    """
    bar = tqdm(total=len(jobs), desc="demo images", unit="img", disable=not progress)
    boxes = {}
    try:
        if workers <= 1 or len(jobs) < 32:  # a pool costs more than it saves on a handful of images
            _init_worker()
            for job in jobs:
                split, i, box = _render_job(job)
                boxes[split, i] = box
                bar.update()
            return boxes
        # spawn: forking a process that holds torch/OpenMP threads (a notebook) can deadlock
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for split, i, box in pool.imap_unordered(_render_job, jobs, chunksize=8):
                boxes[split, i] = box
                bar.update()
        return boxes
    finally:
        bar.close()


def write_csvs(out_dir: Path, plans: dict, boxes: dict) -> None:
    """Write the four CSVs (ST1 and ST2, train and val) with the real columns, rows sorted by image name."""
    for split, plan in plans.items():
        for task, idx in ((ST1, plan["st1"]), (ST2, plan["st2"])):
            rows = []
            for i in idx:
                labels = [int(plan["labels"][column][i]) for column in task.label_columns]
                rows.append([plan["names"][i], *boxes[split, int(i)], *labels])
            rows.sort(key=lambda r: r[0])  # the real CSVs are sorted by image name
            with open(out_dir / task.csv_name(split), "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["image_name", *_BOX_COLUMNS, *task.label_columns])
                writer.writerows(rows)
