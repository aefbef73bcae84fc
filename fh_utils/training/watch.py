"""What :func:`fit <fh_utils.training.engine.fit>` writes for people watching a run: its state and TensorBoard.

:class:`RunWatch` wraps the epoch loop of one ``fit`` call: on entry ``state.json`` says ``"running"`` (with
host, pid, epochs) and a heartbeat thread rewrites it every :data:`fh_utils.runs.RUN_HEARTBEAT_S` seconds; the
TensorBoard event file is started from the history the call resumes from (:class:`EpochBoard`). After each
epoch (:meth:`RunWatch.on_epoch`, the first of ``fit``'s epoch callbacks) the epoch's scalars are appended and
the heartbeat thread rewrites the state with the epoch (the loop never waits for that write). On exit the state
becomes ``"finished"``, ``"pruned"`` (``optuna.TrialPruned`` from a sweep's pruning callback), ``"killed"``
(KeyboardInterrupt: the kernel was interrupted) or ``"failed"`` (any other error, named in ``error``). A SIGKILL
writes nothing: :func:`fh_utils.runs.read_run_state` infers ``"killed"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from fh_utils.runs import RUN_HEARTBEAT_S, RunHeartbeat, read_run_state, write_run_state
from fh_utils.training.tensorboard import EpochBoard

log = logging.getLogger("fh_utils.train")
TENSORBOARD = True  # module switch: benchmarks/watch_overhead.py turns it off to measure what the events cost


def final_state(exc: BaseException | None) -> str:
    """The run state an exception leaving the epoch loop means (None: ``"finished"``)."""
    if exc is None:
        return "finished"
    if type(exc).__name__ == "TrialPruned":  # optuna's, without importing optuna
        return "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "killed"
    return "failed"


class RunWatch:
    """Run state and TensorBoard scalars around one ``fit`` call's epoch loop (a context manager).

    Args:
        run_dir: Run folder.
        history: The epochs done before this call (``TrainingState.history``; empty for a new run).
        epochs: Epochs the run is configured for.
        extra_metrics: The run's extra metrics (the ST2 colour baseline becomes a TensorBoard line).
        tensorboard: Write the event files (``False``: state only; None: :data:`TENSORBOARD`).
        heartbeat: Seconds between heartbeats.
    """

    def __init__(self, run_dir: str | Path, history: list[dict], epochs: int, extra_metrics: dict | None = None,
                 tensorboard: bool | None = None, heartbeat: float = RUN_HEARTBEAT_S):  # fmt: skip
        self.run_dir, self.history, self.epochs = Path(run_dir), history, int(epochs)
        write_events = TENSORBOARD if tensorboard is None else tensorboard
        self.board = EpochBoard(run_dir, extra_metrics) if write_events else None
        self.heart = RunHeartbeat(run_dir, heartbeat)

    @property
    def epoch(self) -> int:
        """Epochs done so far."""
        return int(self.history[-1]["epoch"]) if self.history else 0

    def __enter__(self) -> RunWatch:
        before = read_run_state(self.run_dir)["state"] if self.history else None
        write_run_state(self.run_dir, "running", epoch=self.epoch, epochs=self.epochs, error=None,
                        resumed_from=before)  # fmt: skip
        if self.board is not None:
            try:
                self.board.open(self.history)
                detail = f"resumed at epoch {self.epoch + 1} (was {before})" if before else ""
                self.board.add_state("running", self.epoch, detail)
            except Exception as exc:  # noqa: BLE001  (a board that cannot be written never stops training)
                log.warning("no TensorBoard events for this run: %s: %s", type(exc).__name__, exc)
                self.board = None
        self.heart.start()
        return self

    def on_epoch(self, row: dict) -> None:
        """Epoch callback: append the epoch's scalars and beat (``history`` already holds ``row``)."""
        if self.board is not None:
            self.board.add_epoch(row)
        self.heart.update(epoch=int(row["epoch"]))  # written by the heartbeat thread

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.heart.stop()
        state = final_state(exc)
        error = f"{type(exc).__name__}: {exc}"[-2000:] if state == "failed" else None
        write_run_state(self.run_dir, state, epoch=self.epoch, error=error)
        if self.board is not None:
            self.board.add_state(state, self.epoch, error or "")
            self.board.close()
            log.info("tensorboard: %s (opened in %.2f s; %.4f s writing %d epoch(s))", self.board.folder,
                     self.board.open_seconds, self.board.seconds, self.board.epochs_added)  # fmt: skip
