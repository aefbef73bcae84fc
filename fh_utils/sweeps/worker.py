"""A sweep worker: claim a trial, run its notebook, tell the study how it ended; recover trials whose worker died.

``python -m fh_utils.sweeps.worker SPEC.json --storage URL [--worker I] [--threads N]`` is what the coordinator
(:func:`fh_utils.sweeps.coordinator.run_sweep`) starts, once per worker.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from fh_utils.io import read_json
from fh_utils.paths import runs_dir
from fh_utils.runs import METRICS_FILE, pid_alive
from fh_utils.sweeps.spec import SweepSpec, load_spec
from fh_utils.sweeps.study import load_study
from fh_utils.sweeps.trial import TRIAL_ENV, trial_environment, trial_run_name

# A running trial writes its heartbeat into the study every 10 s; one silent for 120 s has lost its worker.
TRIAL_HEARTBEAT_S, GRACE_S = 10.0, 120.0
OUTCOMES = ("complete", "no_validation", "failed", "pruned", "lost")


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
    """``<sweep>/tNNNN`` (:func:`fh_utils.sweeps.trial.trial_run_name`), or a lost trial's folder for its retry."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    previous = frozen.user_attrs.get("run_name") if "failed_trial" in frozen.system_attrs else None
    if previous:
        return previous, True
    return trial_run_name(spec.name, trial.number), False


def execute_trial_notebook(notebook: Path, output: Path, params: dict[str, Any], timeout: int | None = None) -> Path:
    """:func:`fh_utils.runner.notebooks.run_notebook` for a sweep worker (the executed copy is kept on failure).

    No HTML rendering, and the kernel's start-up may take up to 10 minutes (a loaded machine can take over a
    minute).
    """
    from fh_utils.runner.notebooks import run_notebook

    return run_notebook(notebook, output, params, html=False, timeout=timeout, start_timeout=600)


def run_trial(study: Any, trial: Any, spec: SweepSpec, url: str, threads: int = 0, heartbeat: float = TRIAL_HEARTBEAT_S,
              timeout: int | None = None) -> str:  # fmt: skip
    """Run one trial's notebook and tell the study how it ended; returns the outcome (one of ``OUTCOMES``)."""
    from optuna.trial import TrialState
    from papermill.exceptions import PapermillExecutionError

    from fh_utils.runner.notebooks import notebook_parameters

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
    os.environ.update(trial_environment(url, spec.name, trial._trial_id, spec.pruner))
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
        for key in TRIAL_ENV:
            os.environ.pop(key, None)
    trial.set_user_attr("notebook_seconds", time.perf_counter() - start)
    score = None
    if outcome == "complete":
        metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
        score = metrics.get("score")
        if score is None:  # split="full": Optuna needs a value to complete a trial, so it ends as FAIL
            outcome = "no_validation" if metrics.get("validation") == "none" else "failed"
            error = error or ("no validation (split='full')" if outcome == "no_validation" else f"no {METRICS_FILE}")
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
               heartbeat: float = TRIAL_HEARTBEAT_S, grace: float = GRACE_S) -> dict[str, int]:  # fmt: skip
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


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fh_utils.sweeps.worker",
        description="one sweep worker (started by fh_utils.sweeps.coordinator.run_sweep)",
    )
    parser.add_argument("spec", help="the resolved spec (outputs/sweeps/<sweep>/spec.json)")
    parser.add_argument("--storage", required=True, help="the study's storage URL")
    parser.add_argument("--worker", type=int, default=0, help="this worker's index (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads a trial gets (default %(default)s: all)")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=TRIAL_HEARTBEAT_S,
        help="seconds between a trial's heartbeats (default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=GRACE_S,
        help="seconds without a heartbeat before a trial is lost (default %(default)s)",
    )
    args = parser.parse_args(argv)
    spec = read_json(args.spec)
    counts = run_worker(spec, args.storage, args.worker, args.threads, args.heartbeat, args.grace)
    print(f"[worker {args.worker}] done: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
