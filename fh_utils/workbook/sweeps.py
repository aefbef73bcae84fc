"""Sweeps: many runs of a training notebook (seeds × folds × recipes) as one Optuna study.

``python -m fh_utils sweep SPEC.yaml [--workers N] [--devices cpu|0,1,...] [--storage URL]`` or
:func:`run_sweep`. Each trial is one papermill run of the spec's notebook into ``outputs/runs/<sweep>/<trial>/``
(executed notebook included); its value is that run's ``metrics.json`` score. The study lives in
``outputs/sweeps/<sweep>/journal.log`` by default, or in any Optuna RDB (``--storage postgresql://...``): the
same command started on several machines then shares the study.

How the pieces fit:

- the coordinator (:func:`run_sweep`) creates or loads the study, enqueues the grid points that no trial holds
  yet, recovers lost trials, then starts ``N`` worker processes (``python -m fh_utils.workbook.sweeps worker``),
  each pinned to one device (``CUDA_VISIBLE_DEVICES``) or, on CPU, given its share of the threads;
- a worker (:func:`run_worker`) claims a trial (a waiting one first: an enqueued grid point or a retry), runs
  its notebook, and tells the study the score, ``FAIL`` (the notebook failed: its executed copy is kept) or
  ``PRUNED``; it keeps a heartbeat in the trial's ``heartbeat`` user attribute meanwhile;
- a trial whose worker died (same host and its pid gone, or no heartbeat for ``grace`` seconds) is marked
  failed and re-enqueued with the same parameters by Optuna's retry callback (``RetryHeartbeatStaleTrialCallback``)
  (:func:`recover_lost_trials`, run by the coordinator and by every worker before each claim); the retry reuses
  the lost trial's run folder with ``resume=True``, so it continues from ``last.pt``. Rerunning the command
  therefore resumes the study: finished trials are skipped, lost ones retried, nothing runs twice.

Optuna's own heartbeat only exists for RDB storages and only inside ``Study.optimize``; the workers claim and
tell trials themselves (so a grid point is never handed out twice), hence the equivalent above, which works
with every storage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.io import read_json, write_json
from fh_utils.paths import outputs_dir, runs_dir
from fh_utils.runs import METRICS_FILE, pid_alive
from fh_utils.workbook.sweep_spec import SweepSpec, load_spec

# How a trial's kernel finds its trial (set in the worker's environment while the notebook runs).
ENV_STORAGE, ENV_STUDY = "FH_SWEEP_STORAGE", "FH_SWEEP_STUDY"
ENV_TRIAL, ENV_PRUNER = "FH_SWEEP_TRIAL", "FH_SWEEP_PRUNER"
JOURNAL_FILE, SPEC_FILE = "journal.log", "spec.json"
HEARTBEAT_S, GRACE_S = 10.0, 120.0
OUTCOMES = ("complete", "no_validation", "failed", "pruned", "lost")


def sweep_dir(name: str) -> Path:
    """``outputs/sweeps/<name>/``: the study's journal, the resolved spec and the workers' logs."""
    return outputs_dir() / "sweeps" / name


def storage_url(name: str, storage: str | None = None) -> str:
    """The study's storage as a URL the workers can open: ``storage``, else ``journal://<sweep dir>/journal.log``."""
    return storage or f"journal://{sweep_dir(name) / JOURNAL_FILE}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal://PATH`` (a journal file) or an RDB URL (``postgresql://...``).

    A journal file is Optuna's recommendation for several processes on one machine: every write is an append
    under a file lock, where SQLite serialises writers on one database lock and fails them with "database is
    locked" under parallel trials (Optuna's docs advise against SQLite for parallel optimisation).
    """
    import optuna

    if url.startswith("journal://"):
        path = Path(url[len("journal://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _sampler(spec: SweepSpec, worker: int) -> Any:
    import optuna

    if spec.grid or spec.sampler == "random":  # the grid is enqueued: the sampler never picks a grid point
        return optuna.samplers.RandomSampler(seed=spec.seed + worker)
    return optuna.samplers.TPESampler(seed=spec.seed + worker)  # one seed per worker: no duplicate start-up points


def make_pruner(name: str) -> Any:
    """Optuna pruner of a spec's ``pruner`` (``"none"`` or ``"median"``)."""
    import optuna

    if name == "median":
        # Steps are 1-based epochs and only steps below n_warmup_steps are spared: this spares epoch 1.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def load_study(spec: SweepSpec, url: str, worker: int = 0) -> Any:
    """Create or load the sweep's study (name = sweep name) in ``url``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.name, storage=open_storage(url), direction=spec.direction,
                               sampler=_sampler(spec, worker), pruner=make_pruner(spec.pruner),
                               load_if_exists=True)  # fmt: skip


def _params_of(trial: Any) -> dict[str, Any]:
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def enqueue_grid(study: Any, spec: SweepSpec) -> int:
    """Enqueue every grid point no trial of the study holds yet; returns how many were added."""
    have = {_key(_params_of(t)) for t in study.get_trials(deepcopy=False)}
    added = 0
    for point in spec.grid_points():
        if _key(point) not in have:
            study.enqueue_trial(point)
            added += 1
    return added


def _is_lost(trial: Any, now: float, grace: float) -> bool:
    beat = trial.user_attrs.get("heartbeat")
    if not beat:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > grace
    if beat.get("host") == socket.gethostname() and not pid_alive(int(beat.get("pid", 0))):
        return True
    return now - float(beat.get("time", 0)) > grace


def recover_lost_trials(study: Any, grace: float = GRACE_S) -> list[int]:
    """Fail every running trial whose worker is gone and enqueue a retry of it; returns the lost trial numbers.

    A worker is gone when it ran on this host and its pid no longer exists, or when its heartbeat is older
    than ``grace`` seconds (another machine's worker). The retry (Optuna's retry callback) keeps
    the parameters and the user attributes, so it reuses the lost trial's run folder.
    """
    import optuna
    from optuna.trial import TrialState

    try:  # renamed in Optuna 4.9 (the old name warns, and goes in 6.0)
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    except ImportError:  # pragma: no cover  (Optuna < 4.9)
        from optuna.storages import RetryFailedTrialCallback as Retry

    storage, lost = study._storage, []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_lost(trial, now, grace):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "outcome", "lost")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        frozen = storage.get_trial(trial._trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            Retry()(study, frozen)
        lost.append(trial.number)
    return lost


def _lost_numbers(trials: list) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _beat(storage: Any, trial_id: int) -> None:
    storage.set_trial_user_attr(trial_id, "heartbeat", {"host": socket.gethostname(), "pid": os.getpid(),
                                                        "time": time.time()})  # fmt: skip


def claim_trial(study: Any, spec: SweepSpec) -> Any | None:
    """The next trial for this worker, or None when the sweep has nothing left to start.

    A waiting trial (grid point or retry) is claimed atomically (WAITING -> RUNNING succeeds for one process
    only). A search asks the sampler for a new trial while fewer than ``n_trials`` are running or counted
    (a trial lost and retried counts once); concurrent workers may overshoot ``n_trials`` by a trial or two.
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
            _beat(storage, trial._trial_id)  # owned from now on: a crash before the notebook starts is recovered
            return optuna.Trial(study, trial._trial_id)
    if spec.grid:
        return None
    trials = study.get_trials(deepcopy=False)
    lost = _lost_numbers(trials)
    counted = [t for t in trials if t.state != TrialState.WAITING and t.number not in lost]
    if len(counted) >= spec.n_trials:
        return None
    trial = study.ask()
    _beat(storage, trial._trial_id)
    return trial


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """The trial's swept parameters (fixed for a grid point or a retry, sampled for a new search trial)."""
    out = {}
    for name, values in spec.grid.items():
        out[name] = trial.suggest_categorical(name, values)
    for name, space in spec.search.items():
        if "choices" in space:
            out[name] = trial.suggest_categorical(name, space["choices"])
        elif all(isinstance(space[k], int) and not isinstance(space[k], bool) for k in ("low", "high")):
            out[name] = trial.suggest_int(name, space["low"], space["high"], step=space.get("step", 1),
                                          log=space.get("log", False))  # fmt: skip
        else:
            out[name] = trial.suggest_float(name, float(space["low"]), float(space["high"]), step=space.get("step"),
                                            log=space.get("log", False))  # fmt: skip
    return out


class _Heartbeat(threading.Thread):
    """Writes ``{host, pid, time}`` into the trial's ``heartbeat`` user attribute every ``interval`` seconds."""

    def __init__(self, storage: Any, trial_id: int, interval: float):
        super().__init__(daemon=True)
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stopped = threading.Event()
        self.beat()

    def beat(self) -> None:
        _beat(self.storage, self.trial_id)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001  (the trial finished meanwhile: nothing left to keep alive)
                return


def _trial_run_name(spec: SweepSpec, trial: Any) -> tuple[str, bool]:
    """``<sweep>/t<number>``, or the lost trial's folder for a retry (then the notebook resumes)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    previous = frozen.user_attrs.get("run_name") if "failed_trial" in frozen.system_attrs else None
    if previous:
        return previous, True
    return f"{spec.name}/t{trial.number:04d}", False


def execute_trial_notebook(notebook: Path, output: Path, params: dict[str, Any], timeout: int | None = None) -> Path:
    """:func:`fh_utils.workbook.notebooks.run_notebook` for a sweep worker (the executed copy is kept on failure).

    No HTML rendering, and the kernel's start-up may take up to 10 minutes (a loaded machine can take over a
    minute).
    """
    from fh_utils.workbook.notebooks import run_notebook

    return run_notebook(notebook, output, params, html=False, timeout=timeout, start_timeout=600)


def run_trial(study: Any, trial: Any, spec: SweepSpec, url: str, threads: int = 0, heartbeat: float = HEARTBEAT_S,
              timeout: int | None = None) -> str:  # fmt: skip
    """Run one trial's notebook and tell the study how it ended; returns the outcome (one of ``OUTCOMES``)."""
    from optuna.trial import TrialState
    from papermill.exceptions import PapermillExecutionError

    from fh_utils.workbook.notebooks import notebook_parameters

    notebook = spec.notebook_path
    declared = notebook_parameters(notebook)
    run_name, retry = _trial_run_name(spec, trial)
    params = {**spec.fixed, **suggest(trial, spec), "run_name": run_name}
    if retry and "resume" in declared:
        params["resume"] = True
    if threads and "threads" in declared and "threads" not in params:
        params["threads"] = threads
    run_dir = runs_dir() / run_name
    for key, value in {"run_name": run_name, "run_dir": str(run_dir), "host": socket.gethostname()}.items():
        trial.set_user_attr(key, value)
    beat = _Heartbeat(study._storage, trial._trial_id, heartbeat)
    beat.start()
    # The kernel inherits this process's environment: it finds the trial there to report epoch scores.
    os.environ.update({ENV_STORAGE: url, ENV_STUDY: spec.name, ENV_TRIAL: str(trial._trial_id),
                       ENV_PRUNER: spec.pruner})  # fmt: skip
    start = time.perf_counter()
    try:
        execute_trial_notebook(notebook, run_dir / notebook.name, params, timeout=timeout)
        outcome, error = "complete", None
    except PapermillExecutionError as exc:
        outcome, error = ("pruned" if exc.ename == "TrialPruned" else "failed"), f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # noqa: BLE001  (any failure of one trial must not stop the sweep)
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        beat.stopped.set()
        for key in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER):
            os.environ.pop(key, None)
    trial.set_user_attr("notebook_seconds", time.perf_counter() - start)
    score = None
    if outcome == "complete":
        metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
        score = metrics.get("score")
        if score is None:  # split="full": Optuna needs a value to complete a trial, so it ends as FAIL
            outcome = "no_validation" if metrics.get("validation") == "none" else "failed"
            error = error or ("no validation (split='full')" if outcome == "no_validation" else "no metrics.json")
    trial.set_user_attr("outcome", outcome)
    if error:
        trial.set_user_attr("error", error[-2000:])
    if outcome == "complete":
        study.tell(trial, float(score))
    elif outcome == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    return outcome


def run_worker(spec: SweepSpec | dict | str | Path, url: str, worker: int = 0, threads: int = 0,
               heartbeat: float = HEARTBEAT_S, grace: float = GRACE_S) -> dict[str, int]:  # fmt: skip
    """One worker's loop: recover lost trials, claim one, run it, until the sweep has nothing left to start.

    Returns:
        ``{outcome: count}`` of the trials this worker ran.
    """
    spec = load_spec(spec)
    study = load_study(spec, url, worker)
    counts: dict[str, int] = {}
    while True:
        recover_lost_trials(study, grace)
        trial = claim_trial(study, spec)
        if trial is None:
            return counts
        outcome = run_trial(study, trial, spec, url, threads=threads, heartbeat=heartbeat)
        counts[outcome] = counts.get(outcome, 0) + 1
        print(f"[worker {worker}] trial {trial.number}: {outcome}", flush=True)


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
    heartbeat: float = HEARTBEAT_S,
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
    spec_file = folder / SPEC_FILE
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
        cmd = [sys.executable, "-m", "fh_utils.workbook.sweeps", "worker", str(spec_file), "--storage", url,
               "--worker", str(i), "--threads", str(threads), "--heartbeat", str(heartbeat), "--grace", str(grace)]
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


def sweep_trials(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, outcome, value, run_name, run_dir, notebook seconds, retry_of, params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "outcome": t.user_attrs.get("outcome"),
                     "value": t.value if t.values else None, "run_name": t.user_attrs.get("run_name"),
                     "run_dir": t.user_attrs.get("run_dir"), "seconds": t.user_attrs.get("notebook_seconds"),
                     "retry_of": t.system_attrs.get("failed_trial"), "error": t.user_attrs.get("error"),
                     **{f"param_{k}": v for k, v in _params_of(t).items()}})  # fmt: skip
    return pd.DataFrame(rows)


def open_sweep(name: str, storage: str | None = None) -> Any:
    """The study of a finished or running sweep (read-only use: trials, importances)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(storage_url(name, storage)))


def pruning_callbacks() -> list:
    """Epoch callbacks for ``fit`` inside a sweep trial's kernel (none outside a sweep or with ``pruner: none``).

    Each epoch's ``val_score`` is reported to the trial as an intermediate value; when the pruner says so the
    callback raises ``optuna.TrialPruned``, the notebook stops (``last.pt`` stays valid) and the worker records
    the trial as pruned.
    """
    trial_id, pruner_name = os.environ.get(ENV_TRIAL), os.environ.get(ENV_PRUNER, "none")
    if not trial_id or pruner_name == "none":
        return []
    import optuna

    storage = open_storage(os.environ[ENV_STORAGE])
    study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=storage, pruner=make_pruner(pruner_name))

    def report(row: dict) -> None:
        if row.get("val_score") is None:
            return
        storage.set_trial_intermediate_value(int(trial_id), int(row["epoch"]), float(row["val_score"]))
        if study.pruner.prune(study, storage.get_trial(int(trial_id))):
            raise optuna.TrialPruned(f"pruned at epoch {row['epoch']} (val_score {row['val_score']:.4f})")

    return [report]


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fh_utils.workbook.sweeps")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("worker", help="one sweep worker (started by run_sweep)")
    p.add_argument("spec")
    p.add_argument("--storage", required=True)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S)
    p.add_argument("--grace", type=float, default=GRACE_S)
    args = parser.parse_args(argv)
    spec = read_json(args.spec)
    counts = run_worker(spec, args.storage, args.worker, args.threads, args.heartbeat, args.grace)
    print(f"[worker {args.worker}] done: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
