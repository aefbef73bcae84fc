"""Run folders: ``outputs/runs/<run_name>/`` holds everything one run writes; every file name is here.

``config.json`` (resolved configuration), ``history.csv`` (a row per epoch), ``metrics.json`` (the best
epoch), ``best.pt`` / ``last.pt`` (checkpoints), ``val_epochs.npz`` (every epoch's val probabilities),
``checkpoints/epoch_NNN.pt`` (the last epochs' weights), ``state.json`` (running, finished, failed, pruned, killed:
:func:`read_run_state`), ``tb/`` (TensorBoard scalars), ``figures/``, ``train.log`` and the executed notebook.
All files are written atomically (temporary file, then rename): an interruption leaves the previous version.

A folder that predicts holds a model file (:func:`model_file`): a run's ``best.pt``, a saved ensemble's
``ensemble.pt`` (with ``manifest.json``) or an int8 export's ``model_int8.pt``. A name a user types (a path, a
run name under ``outputs/runs``, several comma-separated, a JSON list) becomes folders in
:func:`resolve_run_dirs`.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.io import atomic_write, read_json, write_json  # noqa: F401  (re-exported for run code)
from fh_utils.paths import project_root, runs_dir

CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "history.csv", "metrics.json"
BEST_CKPT, LAST_CKPT = "best.pt", "last.pt"
STATE_FILE, TB_DIR, FIGURES_DIR = "state.json", "tb", "figures"
# The model files a folder may predict with, in the order looked for: a run, a saved ensemble, an int8 export.
ENSEMBLE_FILE, MANIFEST_FILE, INT8_FILE = "ensemble.pt", "manifest.json", "model_int8.pt"
MODEL_FILES = (BEST_CKPT, ENSEMBLE_FILE, INT8_FILE)
# The colour baseline's score (ST2), kept so a resumed run does not fit it again; the final evaluation's val rows.
BASELINE_FILE, PREDICTIONS_FILE = "baseline.json", "val_predictions.csv"
# Notebook 05's output in the folder it scored; notebook 06's comparison.
SUBMISSION_FILE, SUBMISSION_METRICS_FILE = "submission.csv", "submission_metrics.json"
RUNS_CSV, TOP_K_FILE = "runs.csv", "top_k.json"
# A packaged submission's model/ folder: task, model file, TTA mode, members (fh_utils.leaderboard.package).
SUBMISSION_SPEC_FILE = "submission.json"
# Every epoch's val probabilities (fh_utils.scoring.predictions), and the last epochs' weights (checkpoints/).
EPOCH_PREDICTIONS_FILE, CHECKPOINTS_DIR = "val_epochs.npz", "checkpoints"
# What a run may submit, by the rule that chose it: the best val epoch, the last epoch's weights, the average of the
# last kept epochs' weights (the TRAINING_RULES: TrainConfig.checkpoint, the run's default), or the classifier
# re-trained after training on the frozen backbone of the training rule's checkpoint (fh_utils.training.crt, when
# crt_epochs > 0): best.pt's format, its val probabilities val_crt.npz. cRT is no training rule: it is made from one.
FINAL_CKPT, AVERAGED_CKPT, CRT_CKPT = "final.pt", "averaged.pt", "crt.pt"
CHECKPOINT_FILES = {"best": BEST_CKPT, "last": FINAL_CKPT, "avg": AVERAGED_CKPT, "crt": CRT_CKPT}
CHECKPOINT_RULES = tuple(CHECKPOINT_FILES)
TRAINING_RULES = ("best", "last", "avg")
# The val probabilities of a checkpoint that is no epoch's (the weight average, cRT): what its honest estimate scores.
CHECKPOINT_PREDICTIONS_FILE = "val_{rule}.npz"
# A run's state: "running" while its process lives (heartbeat), then how it ended. "killed" is never written
# by the run itself (SIGKILL, power loss): read_run_state infers it from a dead pid or a stale heartbeat.
RUN_STATES = ("running", "finished", "failed", "pruned", "killed")
RUN_HEARTBEAT_S, STALE_S = 30.0, 150.0  # state.json rewritten every 30 s; silent for 150 s: killed


def default_run_name(task: str | None = None, backbone: str | None = None, img_size: int | None = None) -> str:
    """``<timestamp>-<task>-<backbone>-<img size>``, as timm names its runs."""
    parts = [datetime.now().strftime("%Y%m%d-%H%M%S"), task, backbone.split(".")[0] if backbone else None,
             str(img_size) if img_size else None]  # fmt: skip
    return "-".join(p for p in parts if p)


def create_run_dir(
    run_name: str | None = None,
    task: str | None = None,
    backbone: str | None = None,
    img_size: int | None = None,
    root: str | Path | None = None,
) -> Path:
    """Create (or reuse) ``<root>/<run_name>/`` with its ``figures/`` folder and return it.

    Args:
        run_name: Folder name; empty or None gives :func:`default_run_name`.
        task: Task name (for the default name).
        backbone: Backbone name (for the default name).
        img_size: Input size (for the default name).
        root: Parent folder (default ``outputs/runs``, or ``$FH_OUTPUTS/runs``).
    """
    name = run_name or default_run_name(task, backbone, img_size)
    if not re.fullmatch(r"[\w.\-]+", name):
        raise ValueError(f"run_name {name!r} may only hold letters, digits, '_', '-' and '.'")
    run_dir = Path(root) if root is not None else runs_dir()
    run_dir = run_dir / name
    (run_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    return run_dir


def write_history(run_dir: str | Path, rows: list[dict]) -> None:
    """Rewrite ``history.csv`` from all epoch rows (kept in the checkpoint, so both always agree)."""
    frame = pd.DataFrame(rows)
    atomic_write(Path(run_dir) / HISTORY_FILE, lambda tmp: frame.to_csv(tmp, index=False))


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """The per-epoch history of a run."""
    return pd.read_csv(Path(run_dir) / HISTORY_FILE)


def save_figure(fig: Any, run_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` of the run folder and return the path."""
    path = Path(run_dir) / FIGURES_DIR / f"{name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    return path


def latest_run(task: str | None, need: str, root: str | Path | None = None) -> Path:
    """The newest run folder (of ``task``, or any) that holds the file ``need`` (e.g. ``last.pt``).

    Raises:
        FileNotFoundError: No such run, with the folder searched.
    """
    root = Path(root) if root is not None else runs_dir()
    candidates = []
    for path in root.glob(f"**/{need}"):
        config = path.parent / CONFIG_FILE
        run_task = config_task(read_json(config)) if config.exists() else None
        if task is None or run_task == task:
            candidates.append(path.parent)
    if not candidates:
        what = f"task {task}" if task else "any task"
        raise FileNotFoundError(f"no run of {what} with {need} under {root}; train one with notebook 03/04")
    return max(candidates, key=lambda p: (p / need).stat().st_mtime)


def run_candidates(name: str | Path) -> list[Path]:
    """Where a run folder (or a file such as ``top_k.json``) typed by a user may be, in the order looked at.

    The path as given (absolute, or relative to the working directory), relative to the repository root (a
    notebook's kernel runs in ``notebooks/`` while its user typed the path from the root), and as a name under
    ``outputs/runs``. Duplicates are dropped.
    """
    path = Path(name).expanduser()
    seen: list[Path] = []
    for candidate in (path.absolute(), project_root() / path, runs_dir() / path):
        if candidate not in seen:
            seen.append(candidate)
    return seen


def check_checkpoint_rule(rule: str, training: bool = False) -> str:
    """``rule`` if it is one of :data:`CHECKPOINT_RULES` (with ``training``: :data:`TRAINING_RULES`).

    Raises:
        ValueError: Another rule, naming the allowed ones (``"crt"`` with ``training``: how to ask for it).
    """
    if training and rule == "crt":
        raise ValueError("checkpoint rule 'crt' is chosen when submitting (notebook 05, package --checkpoint crt), "
                         "not when training: train with crt_epochs > 0 and a checkpoint rule of "
                         f"{TRAINING_RULES}, whose checkpoint cRT starts from")  # fmt: skip
    if rule not in (TRAINING_RULES if training else CHECKPOINT_RULES):
        raise ValueError(f"checkpoint rule must be one of {TRAINING_RULES if training else CHECKPOINT_RULES}, "
                         f"got {rule!r}")  # fmt: skip
    return rule


def when_saved(rule: str) -> str:
    """When a run writes its checkpoint of ``rule``: for the messages of a missing one."""
    if rule == "crt":
        return f"a run saves {CRT_CKPT} after its training only when trained with crt_epochs > 0"
    return f"a run saves its {rule!r} checkpoint, {CHECKPOINT_FILES[rule]}, when its training ends"


def recorded_checkpoint_score(metrics: dict[str, Any], rule: str | None) -> float | None:
    """The val score a run's ``metrics.json`` records for its checkpoint of ``rule``, else None.

    The training rule's checkpoint (``"checkpoint"``), cRT's (``"crt"``), the best epoch's (``"score"``) for
    ``"best"``; None for a rule the run did not save or score (or ``rule`` None: a file that is no rule's).
    """
    if rule == "crt":
        return (metrics.get("crt") or {}).get("score")
    saved = metrics.get("checkpoint") or {}
    if rule is not None and saved.get("rule") == rule:
        return saved.get("score")
    return metrics.get("score") if rule == "best" else None


def run_checkpoint_rule(folder: str | Path) -> str:
    """The rule a run was trained to save its checkpoint by (``config.json``'s ``train.checkpoint``; else best)."""
    config = Path(folder) / CONFIG_FILE
    rule = (read_json(config).get("train") or {}).get("checkpoint") if config.is_file() else None
    return check_checkpoint_rule(rule or "best")


def checkpoint_rule_of(path: str | Path) -> str | None:
    """The rule a weights file of a run stands for (``final.pt``: ``"last"``), None for any other file."""
    return next((rule for rule, name in CHECKPOINT_FILES.items() if Path(path).name == name), None)


def model_file(folder: str | Path, rule: str = "") -> Path | None:
    """The model file a folder predicts with, else None.

    A run's checkpoint of ``rule`` (:data:`CHECKPOINT_FILES`); with ``rule=""``, the first that exists of: the
    checkpoint of the rule the run was trained with (:func:`run_checkpoint_rule`; ``best.pt`` for a run from before
    rules), a saved ensemble's ``ensemble.pt``, an int8 export's ``model_int8.pt``. A run whose rule's file is
    missing (one whose training has not ended has no ``final.pt`` yet) gets None: never another checkpoint of it
    in its place.
    """
    folder = Path(folder)
    own = folder / CHECKPOINT_FILES[check_checkpoint_rule(rule or run_checkpoint_rule(folder))]
    if rule:
        return own if own.is_file() else None
    return next((p for p in (own, folder / ENSEMBLE_FILE, folder / INT8_FILE) if p.is_file()), None)


def run_label(path: str | Path) -> str:
    """A run folder as records that travel (``submission.json``, the ledger) name it; never a local path.

    Its path under the runs folder (``outputs/runs``), else its folder name.
    """
    path = Path(path).resolve()
    try:
        return path.relative_to(runs_dir().resolve()).as_posix()
    except ValueError:
        return path.name


def find_run_folder(label: str | Path) -> Path | None:
    """The folder a :func:`run_label` (or a path) names, when it is on this machine."""
    for candidate in (Path(label), runs_dir() / str(label)):
        if str(label) and candidate.is_dir():
            return candidate
    return None


def resolve_run_dir(run_dir: str | Path = "", task: str = "", rule: str = "") -> Path:
    """A folder with a model file (a run's checkpoint, ``ensemble.pt``, ``model_int8.pt``: :func:`model_file`).

    ``run_dir`` is a path (absolute, relative to the working directory or to the repository root), a run name
    under ``outputs/runs``, or ``""`` (the newest run of ``task`` with ``best.pt``). ``rule``: the checkpoint
    rule looked for in a run folder (``""``: the run's own).

    Raises:
        FileNotFoundError: No model file in any of those places, each named.
    """
    if not str(run_dir):
        return latest_run(task or None, BEST_CKPT)
    candidates = run_candidates(run_dir)
    for candidate in candidates:
        if model_file(candidate, rule) is not None:
            return candidate.resolve()
    rules = [rule or run_checkpoint_rule(c) for c in candidates if (c / CONFIG_FILE).is_file()]
    hint = f" ({when_saved(rules[0])})" if rules and rules[0] != "best" else ""
    raise FileNotFoundError(f"no {' / '.join(MODEL_FILES)} for {str(run_dir)!r}{hint}; looked in "
                            + ", ".join(str(c) for c in candidates))  # fmt: skip


def runs_from_json(path: Path) -> list[str]:
    """Run folders listed in a JSON file: a list, or ``{"runs": [...]}``.

    Entries are paths or dicts with ``run_dir`` / ``run`` / ``path``. Relative paths start at the JSON's folder,
    then at ``outputs/runs``.
    """
    data = read_json(path)
    entries = data.get("runs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a list of run folders, or {{'runs': [...]}}, got {type(data).__name__}")
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            entry = next((entry[k] for k in ("run_dir", "run", "path") if k in entry), None)
        if not isinstance(entry, str):
            raise ValueError(f"{path}: cannot read a run folder from {entry!r}")
        rel = path.parent / entry
        out.append(str(rel) if not Path(entry).is_absolute() and model_file(rel) else entry)
    return out


def run_list_file(run_dir: str | Path) -> Path | None:
    """The JSON file a ``run_dir`` names when it is a run list (``top_k.json``, ``ensemble_choice.json``), else None.

    Raises:
        FileNotFoundError: A ``.json`` name found nowhere (the places looked at are named).
    """
    text = str(run_dir).strip()
    if not (text.endswith(".json") and "," not in text):
        return None
    found = [c for c in run_candidates(text) if c.is_file()]
    if not found:
        raise FileNotFoundError(f"run list {text!r} not found; looked in "
                                + ", ".join(str(c) for c in run_candidates(text)))  # fmt: skip
    return found[0]


def weights_from_json(path: str | Path) -> list[float] | None:
    """The members' weights a run list records (every entry a dict with ``"weight"``), else None."""
    data = read_json(path)
    entries = data.get("runs") if isinstance(data, dict) else data
    if isinstance(entries, list) and entries and all(isinstance(e, dict) and "weight" in e for e in entries):
        return [float(e["weight"]) for e in entries]
    return None


def resolve_run_dirs(run_dir: str | Path = "", task: str = "", rule: str = "") -> list[Path]:
    """The run folders of ``run_dir``: one folder, comma-separated folders, or a JSON file that lists them.

    ``rule``: the checkpoint rule each run folder must have a file for (``""``: each run's own).
    """
    listed = run_list_file(run_dir)
    if listed is not None:
        names = runs_from_json(listed)
    else:
        names = [t.strip() for t in str(run_dir).strip().split(",") if t.strip()] or [""]
    return [resolve_run_dir(n, task, rule) for n in names]


def parse_weights(weights: str | list[float] | tuple[float, ...] | None, n: int) -> list[float] | None:
    """Ensemble weights, one per run, from ``"1,2"`` or a list; None when none are given.

    Raises:
        ValueError: Not ``n`` of them.
    """
    if weights is None or weights == "" or weights == []:
        return None
    values = [float(w) for w in (weights.split(",") if isinstance(weights, str) else weights)]
    if len(values) != n:
        raise ValueError(f"{len(values)} weights for {n} runs")
    return values


def config_task(config: dict) -> str | None:
    """The task name recorded in a run's ``config.json`` (None when it has none)."""
    task = config.get("task")
    return task.get("name") if isinstance(task, dict) else task


def list_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run folder (sweep trials included) that has a ``metrics.json``.

    Columns: run (path under ``root``), state (:func:`read_run_state`), task, backbone, img_size, best epoch,
    score, baseline_score.
    """
    root = Path(root) if root is not None else runs_dir()
    rows = []
    for metrics_path in sorted(root.glob(f"**/{METRICS_FILE}")):
        metrics = read_json(metrics_path)
        config_path = metrics_path.parent / CONFIG_FILE
        config = read_json(config_path) if config_path.exists() else {}
        model = config.get("model", {})
        rows.append(
            dict(run=str(metrics_path.parent.relative_to(root)), state=read_run_state(metrics_path.parent)["state"],
                 task=metrics.get("task"),
                 backbone=model.get("backbone"), img_size=model.get("img_size"), epoch=metrics.get("epoch"),
                 score=metrics.get("score"), baseline_score=metrics.get("baseline_score"))  # fmt: skip
        )
    columns = ["run", "state", "task", "backbone", "img_size", "epoch", "score", "baseline_score"]
    return pd.DataFrame(rows, columns=columns)


def write_run_state(run_dir: str | Path, state: str, **info: Any) -> dict:
    """Write ``state.json``: ``state`` (one of :data:`RUN_STATES`), this process's host and pid, the time.

    Args:
        run_dir: Run folder.
        state: ``"running"`` (also the heartbeat), ``"finished"``, ``"failed"`` or ``"pruned"``.
        **info: More fields (epoch, epochs, error, ...), merged over the previous file's.

    Returns:
        The record written.
    """
    if state not in RUN_STATES:
        raise ValueError(f"run state {state!r} is not one of {RUN_STATES}")
    path = Path(run_dir) / STATE_FILE
    previous = read_json(path) if path.exists() else {}
    record = {**previous, **info, "state": state, "host": socket.gethostname(), "pid": os.getpid(),
              "heartbeat": time.time()}  # fmt: skip
    write_json(path, record)
    return record


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid lives on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def read_run_state(run_dir: str | Path, now: float | None = None, stale_s: float = STALE_S) -> dict:
    """A run's state from its ``state.json``, with ``"killed"`` inferred for a run that stopped beating.

    A ``"running"`` record is taken as killed when it was written on this host by a pid that no longer exists,
    or when its heartbeat (every :data:`RUN_HEARTBEAT_S` seconds) is older than ``stale_s``. A run folder from
    before run states (no ``state.json``) is ``"finished"`` when ``history.csv`` holds every epoch of
    ``config.json``, else ``"unknown"``.

    Returns:
        The record (``state``, ``host``, ``pid``, ``heartbeat``, ``epoch``, ...) with ``state`` resolved and
        ``age_s``, the seconds since the last write (None without a file).
    """
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.exists():
        return {"state": _legacy_state(run_dir), "age_s": None}
    try:
        record = read_json(path)
    except ValueError:  # written atomically, so only a hand-edited file gets here
        return {"state": "unknown", "age_s": None}
    age = (time.time() if now is None else now) - float(record.get("heartbeat", 0))
    record["age_s"] = age
    if record.get("state") == "running":
        dead = record.get("host") == socket.gethostname() and not pid_alive(int(record.get("pid") or 0))
        if dead or age > stale_s:
            record["state"] = "killed"
    return record


def _legacy_state(run_dir: Path) -> str:
    try:
        epochs = (read_json(run_dir / CONFIG_FILE).get("train") or {}).get("epochs")
        done = len(pd.read_csv(run_dir / HISTORY_FILE))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return "unknown"
    return "finished" if epochs and done >= int(epochs) else "unknown"


class RunHeartbeat(threading.Thread):
    """Rewrites ``state.json`` as ``"running"`` every ``interval`` seconds until :meth:`stop` (a daemon thread).

    :meth:`update` hands it new fields (the epoch just done) and wakes it: the write (an fsync) happens on this
    thread, never on the training loop's.
    """

    def __init__(self, run_dir: str | Path, interval: float = RUN_HEARTBEAT_S):
        super().__init__(daemon=True, name="fh-run-heartbeat")
        self.run_dir, self.interval = Path(run_dir), interval
        self._stopped, self._wake = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._info: dict[str, Any] = {}

    def beat(self, **info: Any) -> None:
        """Write a ``"running"`` record now, with ``info`` and whatever :meth:`update` handed over."""
        with self._lock:
            self._info.update(info)
            if not self._stopped.is_set():
                write_run_state(self.run_dir, "running", **self._info)

    def update(self, **info: Any) -> None:
        """New fields for the record, written by the heartbeat thread right away (the caller does not wait)."""
        with self._lock:
            self._info.update(info)
        self._wake.set()

    def run(self) -> None:
        """Beat every ``interval`` seconds, or at once when woken by :meth:`update`, until stopped."""
        while not self._stopped.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.beat()
            except OSError:  # a full disk must not kill the run; the next beat tries again
                continue

    def stop(self) -> None:
        """Stop beating; a beat in progress completes first, so a final state written after this one wins."""
        with self._lock:
            self._stopped.set()
        self._wake.set()
