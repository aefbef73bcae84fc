"""TensorBoard scalars of a run, written into its own folder: ``outputs/runs/<run>/tb/``.

One point per epoch (the step is the 1-based epoch, as in ``history.csv``):

=====================  ===================================================================
tag                    value
=====================  ===================================================================
``loss/train``         ``train_loss``
``loss/val``           ``val_loss``
``loss/train_ce``      distillation only: the label term (``train_ce``)
``loss/train_kd``      distillation only: the teacher term (``train_kd``)
``score/val``          ``val_score`` (mean top-1 for ST1, ACSA for ST2)
``score/baseline``     ST2: the colour baseline's score, the same every epoch (a flat line)
``top1/<head>``        each head's validation top-1 (``val_<head>_top1``)
``train/lr``           learning rate at the end of the epoch
``train/img_per_s``    training throughput
=====================  ===================================================================

plus a text ``run/state`` (running, then finished / failed / pruned) and a custom-scalars layout that draws
``score/val`` with ``score/baseline`` and both losses on one chart each.

**Resume.** ``history.csv`` (kept in ``last.pt``) is the truth: each :func:`fit <fh_utils.training.engine.fit>`
call removes the folder's event files and replays the history it starts from into a new one (the event file
also carries a purge marker at step 0, so a TensorBoard that is already watching drops what it read before),
then appends each epoch as it ends. After a kill and a resume every epoch appears exactly once.

TensorBoard is imported when a board opens, never when this module is imported.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from fh_utils.runs import TB_DIR

log = logging.getLogger("fh_utils.train")

# history.csv column -> TensorBoard tag (per-head columns are matched by HEAD_TOP1 below)
ROW_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_ce": "loss/train_ce",
            "train_kd": "loss/train_kd", "val_score": "score/val", "lr": "train/lr",
            "train_img_per_s": "train/img_per_s"}  # fmt: skip
HEAD_TOP1 = re.compile(r"^val_(?P<head>.+)_top1$")
BASELINE_TAG, STATE_TAG = "score/baseline", "run/state"
LAYOUT = {"score": {"val score against the colour baseline": ["Multiline", ["score/val", BASELINE_TAG]]},
          "loss": {"train and val loss": ["Multiline", ["loss/train", "loss/val"]]}}  # fmt: skip


def epoch_scalars(row: dict, extra_metrics: dict | None = None) -> dict[str, float]:
    """The ``{tag: value}`` of one history row (missing or NaN values are left out)."""
    out = {}
    for column, value in row.items():
        match = HEAD_TOP1.match(column)
        tag = ROW_TAGS.get(column) or (f"top1/{match['head']}" if match else None)
        if tag is not None and value is not None and value == value:  # NaN != NaN
            out[tag] = float(value)
    baseline = (extra_metrics or {}).get("baseline_score")
    if baseline is not None:
        out[BASELINE_TAG] = float(baseline)
    return out


def tb_dir(run_dir: str | Path) -> Path:
    """Where a run's event files are: ``<run_dir>/tb``."""
    return Path(run_dir) / TB_DIR


class EpochBoard:
    """The event-file writer of one ``fit`` call (see the module docstring for tags and resume).

    Args:
        run_dir: Run folder; the events go to ``run_dir/tb``.
        extra_metrics: The run's extra metrics (``baseline_score`` becomes the ``score/baseline`` line).
    """

    def __init__(self, run_dir: str | Path, extra_metrics: dict | None = None):
        self.folder = tb_dir(run_dir)
        self.extra_metrics = dict(extra_metrics or {})
        self.writer: Any = None
        self.open_seconds = 0.0  # importing TensorBoard, replaying the history: once per fit call
        self.seconds = 0.0  # appending epochs: what each epoch pays (train.log records both)
        self.epochs_added = 0

    def open(self, history: list[dict]) -> EpochBoard:
        """Start a fresh event file holding ``history`` (the epochs done before this call, maybe none)."""
        start = time.perf_counter()
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is only loaded to write

        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(str(self.folder), purge_step=0, flush_secs=30)
        self.writer.add_custom_scalars(LAYOUT)
        for row in history:
            self._add(row)
        self.writer.flush()
        self.open_seconds += time.perf_counter() - start
        return self

    def _add(self, row: dict) -> None:
        step = int(row["epoch"])
        for tag, value in epoch_scalars(row, self.extra_metrics).items():
            self.writer.add_scalar(tag, value, step)

    def add_epoch(self, row: dict) -> None:
        """Append one epoch's scalars and flush them (a TensorBoard watching sees them at once)."""
        if self.writer is None:
            return
        start = time.perf_counter()
        self._add(row)
        self.writer.flush()
        self.seconds += time.perf_counter() - start
        self.epochs_added += 1

    def add_state(self, state: str, step: int, detail: str = "") -> None:
        """Record the run's state as the text ``run/state`` at ``step`` (the last epoch done)."""
        if self.writer is not None:
            self.writer.add_text(STATE_TAG, f"**{state}**" + (f": {detail}" if detail else ""), step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's event files, read back with TensorBoard's own reader: ``{tag: [(step, value)]}``."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tb_dir(run_dir)), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
