"""Stored probabilities: every epoch's val predictions of a run, in one compact file.

``val_epochs.npz`` (:data:`fh_utils.runs.EPOCH_PREDICTIONS_FILE`) holds, for the rows a run validated on:
``epochs`` (1-based, in order), ``prob__<column>`` per head ``(epochs, rows, classes)`` in float16, ``targets``
``(rows, heads)``, and each row's identity: ``image_name``, ``source`` (the CSV it came from: ``train`` or
``val``; fold runs validate on rows of both) and ``row`` (its index among that CSV's validated rows). With it, any
choice (an epoch, a rule, ensemble members and weights) is re-made and re-scored without retraining. float16
keeps a 1,800-row, 18-class, 30-epoch run under 2 MB; its rounding (3 decimals) can only flip an argmax between two
classes within 0.001 of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fh_utils.io import atomic_write

_PROB = "prob__"


@dataclass
class EpochPredictions:
    """Per-epoch val probabilities of one run (or the out-of-fold gathering of several).

    Attributes:
        epochs: ``(E,)`` 1-based epochs.
        probabilities: ``{column: (E, N, C)}``.
        targets: ``(N, n_heads)`` labels.
        image_name: ``(N,)`` image names.
        source: ``(N,)`` the CSV of each row (``"train"`` / ``"val"``).
        row: ``(N,)`` index of the row among its CSV's validated rows.
        fold: ``(N,)`` the fold that held the row out (out-of-fold gatherings; -1 otherwise).
    """

    epochs: np.ndarray
    probabilities: dict[str, np.ndarray]
    targets: np.ndarray
    image_name: np.ndarray
    source: np.ndarray
    row: np.ndarray
    fold: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if len(self.fold) != len(self.targets):
            self.fold = np.full(len(self.targets), -1, dtype=np.int64)

    @property
    def n_rows(self) -> int:
        """Rows."""
        return len(self.targets)

    def at_epoch(self, epoch: int) -> dict[str, np.ndarray]:
        """``{column: (N, C)}`` of one epoch (1-based)."""
        index = int(np.flatnonzero(self.epochs == epoch)[0])
        return {k: v[index].astype(np.float32) for k, v in self.probabilities.items()}

    def first(self, n_epochs: int) -> EpochPredictions:
        """The first ``n_epochs`` epochs only (a resumed run overwrites what came after)."""
        keep = self.epochs <= n_epochs
        return EpochPredictions(self.epochs[keep], {k: v[keep] for k, v in self.probabilities.items()}, self.targets,
                                self.image_name, self.source, self.row, self.fold)  # fmt: skip

    def append(self, epoch: int, probabilities: dict[str, np.ndarray]) -> EpochPredictions:
        """A copy with one more epoch's ``{column: (N, C)}``."""
        probs = {
            k: np.concatenate([v, probabilities[k][None].astype(np.float16)]) for k, v in self.probabilities.items()
        }
        return EpochPredictions(np.append(self.epochs, epoch), probs, self.targets, self.image_name, self.source,
                                self.row, self.fold)  # fmt: skip

    @classmethod
    def start(cls, probabilities: dict[str, np.ndarray], targets: np.ndarray, image_name, source, row
              ) -> EpochPredictions:  # fmt: skip
        """An empty record for these rows (``probabilities``: ``{column: (C,)}``, only the columns and class counts)."""
        empty = {k: np.zeros((0, len(targets), np.shape(v)[-1]), dtype=np.float16) for k, v in probabilities.items()}
        return cls(
            np.zeros(0, dtype=np.int64),
            empty,
            np.asarray(targets, dtype=np.int64),
            np.asarray(image_name, dtype=str),
            np.asarray(source, dtype=str),
            np.asarray(row, dtype=np.int64),
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically as one ``.npz``."""
        arrays = {"epochs": self.epochs, "targets": self.targets, "image_name": self.image_name,
                  "source": self.source, "row": self.row, "fold": self.fold,
                  **{f"{_PROB}{k}": v.astype(np.float16) for k, v in self.probabilities.items()}}  # fmt: skip

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> EpochPredictions:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            probs = {k[len(_PROB) :]: data[k] for k in data.files if k.startswith(_PROB)}
            return cls(data["epochs"], probs, data["targets"], data["image_name"], data["source"], data["row"],
                       data["fold"])  # fmt: skip
