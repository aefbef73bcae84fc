"""The sweep coordinator: many runs of a training notebook (seeds × folds × recipes) as one Optuna study.

``python -m fh_utils sweep SPEC.yaml [--workers N] [--devices cpu|0,1,...] [--storage URL]`` or
:func:`run_sweep`. Each trial is one papermill run of the spec's notebook into ``outputs/runs/<sweep>/<trial>/``
(executed notebook included); its value is that run's ``metrics.json`` score. The study lives in
``outputs/sweeps/<sweep>/journal.log`` by default, or in any Optuna RDB (``--storage postgresql://...``): the
same command started on several machines then shares the study.

How the pieces fit:

- the coordinator (:func:`run_sweep`) creates or loads the study, enqueues the grid points that no trial holds
  yet, recovers lost trials, then starts ``N`` worker processes (``python -m fh_utils.sweeps.worker``),
  each pinned to one device (``CUDA_VISIBLE_DEVICES``) or, on CPU, given its share of the threads;
- a worker (:func:`fh_utils.sweeps.worker.run_worker`) claims a trial (a waiting one first: an enqueued grid
  point or a retry), runs its notebook, and tells the study the score, ``FAIL`` (the notebook failed: its
  executed copy is kept) or ``PRUNED``; it keeps a heartbeat in the trial's ``heartbeat`` user attribute
  meanwhile;
- a trial whose worker died (same host and its pid gone, or no heartbeat for ``grace`` seconds) is marked
  failed and re-enqueued with the same parameters by Optuna's retry callback (``RetryHeartbeatStaleTrialCallback``)
  (:func:`fh_utils.sweeps.worker.recover_lost_trials`, run by the coordinator and by every worker before each
  claim); the retry reuses the lost trial's run folder with ``resume=True``, so it continues from ``last.pt``.
  Rerunning the command therefore resumes the study: finished trials are skipped, lost ones retried, nothing runs
  twice.

Optuna's own heartbeat only exists for RDB storages and only inside ``Study.optimize``; the workers claim and
tell trials themselves (so a grid point is never handed out twice), hence the equivalent above, which works
with every storage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.io import write_json
from fh_utils.sweeps.spec import SweepSpec, load_spec
from fh_utils.sweeps.study import (
    SWEEP_SPEC_FILE,
    enqueue_grid,
    load_study,
    storage_url,
    sweep_dir,
    sweep_trials,
)  # fmt: skip
from fh_utils.sweeps.worker import GRACE_S, TRIAL_HEARTBEAT_S, recover_lost_trials


def parse_devices(devices: str | None, workers: int | None) -> tuple[list[str | None], int]:
    """Per-worker ``CUDA_VISIBLE_DEVICES`` (None: CPU) and the worker count.

    ``"cpu"`` (or empty) gives CPU workers; ``"0,1"`` pins workers to GPUs in turn (more workers than GPUs share
    them; ``"0,0,1,1"`` puts two on each). Without ``workers`` there is one worker per listed device.
    """
    items = [d.strip() for d in (devices or "cpu").split(",") if d.strip()]
    if not items or items == ["cpu"]:
        n = workers or 1
        return [None] * n, n
    if any(not d.isdigit() for d in items):
        raise ValueError(f"devices must be 'cpu' or GPU indices like '0,1', got {devices!r}")
    n = workers or len(items)
    return [items[i % len(items)] for i in range(n)], n


def worker_env(device: str | None, threads: int) -> dict[str, str]:
    """Environment of a worker process: its GPU (none on CPU) and its share of the CPU threads."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = device if device is not None else ""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("MPLBACKEND", "Agg")
    return env


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the study's storage, its trials and the wall time."""

    name: str
    storage: str
    trials: pd.DataFrame
    seconds: float
    worker_exit_codes: list[int]


def run_sweep(
    spec: SweepSpec | dict | str | Path,
    workers: int | None = None,
    devices: str | None = "cpu",
    storage: str | None = None,
    heartbeat: float = TRIAL_HEARTBEAT_S,
    grace: float = GRACE_S,
    **fixed: Any,
) -> SweepResult:
    """Run (or resume) a sweep with ``workers`` processes; the function behind ``python -m fh_utils sweep``.

    Args:
        spec: A spec file (``sweeps/*.yaml``), dict or :class:`SweepSpec`.
        workers: Trials at once (default: one per listed device, or 1).
        devices: ``"cpu"`` or GPU indices (``"0,1,2,3"``; repeat one to share it: ``"0,0,1,1"``).
        storage: An Optuna RDB URL shared by several machines; default a journal file under
            ``outputs/sweeps/<sweep>/``.
        heartbeat: Seconds between a running trial's heartbeats.
        grace: A trial without a heartbeat for this long is lost (retried); on this host a dead pid is enough.
        **fixed: Fixed notebook parameters added to (or overriding) the spec's.

    Returns:
        A :class:`SweepResult` (``trials`` is :func:`sweep_trials`).
    """
    spec = load_spec(spec, **fixed)
    url = storage_url(spec.name, storage)
    folder = sweep_dir(spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / SWEEP_SPEC_FILE
    write_json(spec_file, spec.to_dict())
    study = load_study(spec, url)
    study.set_user_attr("spec", spec.to_dict())
    recover_lost_trials(study, grace)
    if spec.grid:
        enqueue_grid(study, spec)
    per_worker, n = parse_devices(devices, workers)
    threads = max(1, (os.cpu_count() or 1) // n)
    start = time.perf_counter()
    procs = []
    for i, device in enumerate(per_worker):
        cmd = [sys.executable, "-m", "fh_utils.sweeps.worker", str(spec_file), "--storage", url, "--worker", str(i),
               "--threads", str(threads), "--heartbeat", str(heartbeat), "--grace", str(grace)]  # fmt: skip
        log = open(folder / f"worker-{i}.log", "a", encoding="utf-8")  # noqa: SIM115  (closed below)
        procs.append((subprocess.Popen(cmd, env=worker_env(device, threads), stdout=log, stderr=subprocess.STDOUT),
                      log))  # fmt: skip
    codes = []
    try:
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
    finally:
        for proc, _ in procs:  # an interrupted coordinator takes its workers with it
            if proc.poll() is None:
                proc.terminate()
    seconds = time.perf_counter() - start
    return SweepResult(spec.name, url, sweep_trials(study), seconds, codes)
