"""Running the jobs: in this process or in a pool of spawned workers, with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import cv2

from fh_utils.prep.background.jobs import Job, Settings, process_job
from fh_utils.prep.background.rembg import set_onnx_threads

_WORKER_STATE: dict[str, Any] = {}


def _init_worker(out_root: Path, settings: Settings) -> None:
    cv2.setNumThreads(1)  # one process per core already: OpenCV's own threads would only contend
    set_onnx_threads(1)
    _WORKER_STATE.update(out_root=out_root, settings=settings)


def _worker_job(job: Job) -> str | None:
    return process_job(job, _WORKER_STATE["out_root"], _WORKER_STATE["settings"])


def run_jobs(
    jobs: list[Job], out_root: Path, settings: Settings, workers: int, progress: bool
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
    jobs: list[Job], out_root: Path, settings: Settings, workers: int
) -> Iterable[tuple[Job, str | None]]:
    if workers <= 1:
        for job in jobs:
            yield job, process_job(job, out_root, settings)
        return
    # spawn, not fork: the caller (a notebook) may hold threads or CUDA state that a fork would copy. An
    # executor, not multiprocessing.Pool: when a worker dies, Pool waits forever, the executor raises.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(out_root, settings))
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
