"""Watching runs as they happen: optuna-dashboard for a sweep, TensorBoard for every run.

- ``python -m fh_utils dashboard SWEEP_OR_STORAGE [--port 8080]`` (``make dashboard SWEEP=name``): the sweep's
  study in optuna-dashboard on a loopback port, wherever it lives: ``outputs/sweeps/<sweep>/journal.log``, a
  journal file or folder, or the ``--storage`` URL the sweep ran with (``postgresql://...``). The study is
  opened **read-only** (:func:`open_read_only`): the journal is read without ever being opened for writing, an
  RDB without creating tables (PostgreSQL sessions are also ``default_transaction_read_only``, SQLite opened
  ``mode=ro``), and every storage method that writes raises :class:`ReadOnlyStorageError`, so the dashboard
  can never change a study that workers are writing (its note, delete and feedback buttons fail instead).
  Each trial shows its run folder's state as the user attribute ``run_state`` (:func:`fh_utils.runs.read_run_state`:
  a trial still ``RUNNING`` in the study whose process died shows ``killed``); the epoch scores a sweep reports for
  pruning (``pruner: median``) are its intermediate values.
- ``python -m fh_utils board [--port 6006]`` (``make board``): TensorBoard over ``outputs/runs`` (every run's
  ``tb/`` folder, :mod:`fh_utils.training.tensorboard`) on a loopback port, after a table of every run's state.
"""

from __future__ import annotations

import copy
import os
import socketserver
import subprocess
import sys
from pathlib import Path
from typing import Any

from fh_utils.paths import outputs_dir, runs_dir
from fh_utils.runs import STATE_FILE, TB_DIR, read_run_state

LOOPBACK = "127.0.0.1"
DASHBOARD_PORT, BOARD_PORT = 8080, 6006
WRITE_METHODS = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
                 "create_new_trial", "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
                 "set_trial_user_attr", "set_trial_system_attr")  # fmt: skip
FINISHED = ("COMPLETE", "PRUNED", "FAIL")


class ReadOnlyStorageError(PermissionError):
    """A write was attempted through a read-only storage."""


def resolve_storage(target: str) -> str:
    """The storage URL of ``target``: a URL as is, a journal file or a folder holding one, or a sweep's name.

    Raises:
        FileNotFoundError: Nothing of that name, with the sweeps that exist.
    """
    from fh_utils.sweeps.study import JOURNAL_FILE, SWEEP_SPEC_FILE, sweep_dir

    if "://" in target:
        return target
    path = Path(target)
    if path.is_file():
        return f"journal://{path.resolve()}"
    if (path / JOURNAL_FILE).is_file():
        return f"journal://{(path / JOURNAL_FILE).resolve()}"
    journal = sweep_dir(target) / JOURNAL_FILE
    if journal.is_file():
        return f"journal://{journal}"
    if (sweep_dir(target) / SWEEP_SPEC_FILE).is_file():
        raise FileNotFoundError(f"sweep {target!r} has no journal under {sweep_dir(target)}: it ran with --storage; "
                                "pass that URL (postgresql://...) instead")  # fmt: skip
    known = sorted(p.parent.name for p in (outputs_dir() / "sweeps").glob(f"*/{JOURNAL_FILE}"))
    raise FileNotFoundError(f"no sweep, journal or storage URL {target!r}; sweeps here: {', '.join(known) or 'none'}")


def _read_only_journal(path: Path) -> Any:
    from optuna.storages.journal import JournalFileBackend

    class ReadOnlyJournalFileBackend(JournalFileBackend):
        """Optuna's journal file reader that never opens the file for writing (nor creates it or its lock)."""

        def __init__(self, file_path: str):  # the parent's __init__ would create the file
            self._file_path = file_path
            self._lock = None
            self._log_number_offset = {0: 0}

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            raise ReadOnlyStorageError(f"{self._file_path} is opened read-only")

    if not path.is_file():
        raise FileNotFoundError(f"no journal file {path}")
    return ReadOnlyJournalFileBackend(str(path))


def _read_only_rdb(url: str) -> Any:
    import optuna

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    elif url.startswith("sqlite:///") and "mode=ro" not in url:
        url = f"sqlite:///file:{url[len('sqlite:///') :]}?mode=ro&uri=true"
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)


def open_read_only(url: str) -> ReadOnlyStorage:
    """A :class:`ReadOnlyStorage` over the study storage at ``url`` (``journal://PATH`` or an RDB URL)."""
    import optuna

    if url.startswith("journal://"):
        inner = optuna.storages.JournalStorage(_read_only_journal(Path(url[len("journal://") :])))
    else:
        inner = _read_only_rdb(url)
    return ReadOnlyStorage(inner)


def _base_storage() -> type:
    from optuna.storages import BaseStorage

    return BaseStorage


class ReadOnlyStorage(_base_storage()):  # type: ignore[misc]
    """An Optuna storage that reads through ``inner`` and refuses every write.

    Trials come back with the user attribute ``run_state``: the state of the run folder named by their
    ``run_dir`` attribute (copies; ``inner``'s trials are never modified).
    """

    def __init__(self, inner: Any):
        self._inner = inner
        self._final_states: dict[int, str] = {}  # trial id -> run state once the trial is finished

    def __getattribute__(self, name: str) -> Any:
        if name in WRITE_METHODS:

            def refuse(*args: Any, **kwargs: Any) -> None:
                raise ReadOnlyStorageError(f"{name}: this storage is read-only (a dashboard never writes the study)")

            return refuse
        return super().__getattribute__(name)

    def _with_run_state(self, trial: Any) -> Any:
        run_dir = trial.user_attrs.get("run_dir")
        if not run_dir:
            return trial
        state = self._final_states.get(trial._trial_id)
        if state is None:
            state = read_run_state(run_dir)["state"] if Path(run_dir).exists() else "not started"
            if trial.state.name in FINISHED and state != "running":
                self._final_states[trial._trial_id] = state
        out = copy.copy(trial)
        out.user_attrs = {"run_state": state, **trial.user_attrs}  # first: the dashboard lists it on top
        return out

    def get_trial(self, trial_id: int) -> Any:
        """A trial with its ``run_state``."""
        return self._with_run_state(self._inner.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list:
        """Every trial with its ``run_state``."""
        return [self._with_run_state(t) for t in self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)]

    def get_study_id_from_name(self, study_name: str) -> int:  # noqa: D102
        return self._inner.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:  # noqa: D102
        return self._inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list:  # noqa: D102
        return self._inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:  # noqa: D102
        return self._inner.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:  # noqa: D102
        return self._inner.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list:  # noqa: D102
        return self._inner.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:  # noqa: D102
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    # Abstract in BaseStorage: defined so the class can be built; __getattribute__ refuses them first.
    def create_new_study(self, *args: Any, **kwargs: Any) -> int:  # noqa: D102
        raise ReadOnlyStorageError("create_new_study")

    def delete_study(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("delete_study")

    def set_study_user_attr(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_study_user_attr")

    def set_study_system_attr(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_study_system_attr")

    def create_new_trial(self, *args: Any, **kwargs: Any) -> int:  # noqa: D102
        raise ReadOnlyStorageError("create_new_trial")

    def set_trial_param(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_trial_param")

    def set_trial_state_values(self, *args: Any, **kwargs: Any) -> bool:  # noqa: D102
        raise ReadOnlyStorageError("set_trial_state_values")

    def set_trial_intermediate_value(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_trial_intermediate_value")

    def set_trial_user_attr(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_trial_user_attr")

    def set_trial_system_attr(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        raise ReadOnlyStorageError("set_trial_system_attr")


def dashboard_app(target: str) -> Any:
    """The optuna-dashboard WSGI application over ``target`` (see :func:`resolve_storage`), read-only."""
    import optuna_dashboard

    return optuna_dashboard.wsgi(open_read_only(resolve_storage(target)))


def _quiet_handler() -> type:
    from wsgiref.simple_server import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
            pass

    return QuietHandler


def serve_dashboard(target: str, port: int = DASHBOARD_PORT, host: str = LOOPBACK) -> None:
    """Serve :func:`dashboard_app` on ``host:port`` until interrupted; prints the URL first."""
    from wsgiref.simple_server import WSGIServer, make_server

    class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    url = resolve_storage(target)
    app = dashboard_app(target)
    with make_server(host, port, app, server_class=ThreadingServer, handler_class=_quiet_handler()) as server:
        shown = url.split("@")[-1] if "@" in url else url  # no password on the screen
        print(f"optuna-dashboard (read-only) of {shown}: http://{host}:{server.server_port}/dashboard", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def run_states(root: str | Path | None = None) -> list[tuple[str, dict]]:
    """``(run, state record)`` of every run folder under ``root`` that has a ``state.json`` or ``tb/``."""
    root = Path(root) if root is not None else runs_dir()
    folders = sorted({p.parent for p in root.glob(f"**/{STATE_FILE}")} | {p.parent for p in root.glob(f"**/{TB_DIR}")})
    return [(d.relative_to(root).as_posix(), read_run_state(d)) for d in folders]


def board_command(logdir: str | Path | None = None, port: int = BOARD_PORT, host: str = LOOPBACK) -> list[str]:
    """The TensorBoard command line ``make board`` runs: ``logdir`` (default ``outputs/runs``) on a loopback port.

    ``--load_fast=false``: the Python reader, which drops the epochs a resumed run rewrites (purge marker).
    """
    logdir = Path(logdir) if logdir is not None else runs_dir()
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port),
            "--load_fast=false", "--reload_interval", "5"]  # fmt: skip


def run_board(logdir: str | Path | None = None, port: int = BOARD_PORT, host: str = LOOPBACK,
              replace_process: bool = True) -> int:  # fmt: skip
    """Print every run's state and the URL, then run TensorBoard until interrupted.

    With ``replace_process`` (the command line) this process becomes TensorBoard (``os.execv``: a signal to it
    stops TensorBoard itself); otherwise TensorBoard runs as a child and its exit status is returned.
    """
    logdir = Path(logdir) if logdir is not None else runs_dir()
    logdir.mkdir(parents=True, exist_ok=True)
    for run, record in run_states(logdir):
        epoch = f"epoch {record.get('epoch')}/{record.get('epochs')}" if record.get("epochs") else ""
        print(f"  {record['state']:<9} {run}  {epoch}")
    print(f"TensorBoard on {logdir}: http://{host}:{port}/", flush=True)
    if replace_process:
        command = board_command(logdir, port, host)
        os.execv(command[0], command)
    try:
        return subprocess.call(board_command(logdir, port, host))
    except KeyboardInterrupt:
        return 0


def trial_states(sweep: str, storage: str | None = None) -> dict[str, tuple[str, str | None]]:
    """``{run name: (trial state, outcome)}`` of a sweep's study, the latest trial per run folder.

    Read-only (:func:`open_read_only`); ``{}`` when the sweep has no study here (no journal, no ``storage``).
    """
    from fh_utils.sweeps.study import storage_url

    try:
        url = resolve_storage(storage or sweep) if storage else storage_url(sweep)
        ro = open_read_only(url)
        study_id = ro.get_study_id_from_name(sweep)
    except (FileNotFoundError, KeyError, ImportError):
        return {}
    out: dict[str, tuple[str, str | None]] = {}
    for trial in sorted(ro._inner.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number):
        name = trial.user_attrs.get("run_name")
        if name:
            out[name] = (trial.state.name, trial.user_attrs.get("outcome"))
    return out


def combined_state(run_state: str, trial: tuple[str, str | None] | None) -> str:
    """A sweep trial's run state: the study's word for a finished trial, the run folder's while it runs.

    ``COMPLETE`` is finished, ``PRUNED`` pruned, ``FAIL`` failed (killed when the sweep found its worker gone,
    outcome ``lost``; the run's own state for a full fit, outcome ``no_validation``); a ``RUNNING`` or ``WAITING``
    trial (a retry) takes the run folder's state, so a run whose process died shows ``killed``.
    """
    if trial is None:
        return run_state
    state, outcome = trial
    if state == "COMPLETE":
        return "finished"
    if state == "PRUNED":
        return "pruned"
    if state == "FAIL":
        return {"lost": "killed", "no_validation": run_state}.get(outcome or "", "failed")
    return run_state
