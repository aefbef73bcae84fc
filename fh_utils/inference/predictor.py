"""One object that predicts: load the model(s), make the crops, apply TTA, return probabilities or the DataFrame.

A :class:`Predictor` holds one model or an ST2 ensemble's members (:class:`fh_utils.models.ensemble.Member`:
the network, the crop settings its run validated on, its weight) and the test-time augmentation mode. It
feeds every group of members that share an input (size, colour spaces, crop settings, stretch or letterbox) one
pass of crops from :func:`fh_utils.data.datasets.create_dataset`, the same code that made the validation crops,
so a run predicts here exactly what its validation scored.

Used by notebook 05 (:mod:`fh_utils.workbook.submission`), by the final evaluation of notebooks 03/04
(:meth:`Predictor.evaluate`) and by the packaged leaderboard submission (:mod:`fh_utils.inference.aif`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fh_utils.data import reader as _data
from fh_utils.data.datasets import create_dataset
from fh_utils.data.images import ImageLoadError
from fh_utils.models.ensemble import (
    Member,
    average_probabilities,
    check_budget,
    load_ensemble,
    member_from_run,
    members_task,
)  # fmt: skip
from fh_utils.models.export import load_int8
from fh_utils.models.factory import state_dict_size_mb
from fh_utils.runs import ENSEMBLE_FILE, INT8_FILE, MODEL_FILES, model_file
from fh_utils.tasks import Task
from fh_utils.training.tta import check_tta, with_tta


def load_members(model_path: str | Path) -> list[Member]:
    """The members a model file holds: one for a run's checkpoint or ``model_int8.pt``, all of an ``ensemble.pt``.

    A folder stands for its model file (:func:`fh_utils.runs.model_file`: a run's, by the rule it was trained
    with). A run's checkpoint (``best.pt``, ``final.pt``, ...) takes its crop settings from the ``config.json``
    beside it, as its run validated.

    Raises:
        FileNotFoundError: No model file there.
    """
    path = Path(model_path)
    if path.is_dir():
        found = model_file(path)
        if found is None:
            raise FileNotFoundError(f"no {' / '.join(MODEL_FILES)} in {path}")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.name == ENSEMBLE_FILE:
        return load_ensemble(path)
    if path.name == INT8_FILE:
        model, data = load_int8(path)
        return [Member(model, data, 1.0, str(path.parent), state_dict_size_mb(model))]
    return [member_from_run(path.parent, checkpoint=path)]


def label_arrays(task: Task, rows: pd.DataFrame, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """``(y_true, y_pred)`` arrays ``(N, n_heads)`` of predicted rows whose CSV has labels, else None.

    ``rows``: the CSV's rows (labels under the task's label columns); ``frame``: the official DataFrame predicted
    for them, in their order. The one place a prediction is paired with its labels (notebook 05, the dry run).
    """
    if not all(c in rows for c in task.label_columns):
        return None
    return rows[task.label_columns].to_numpy(), frame[[h.key for h in task.heads]].to_numpy()


def _predictions(task: Task, probs: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([probs[h.column].argmax(1) for h in task.heads], 1).astype(np.int64)


class _RowsNamed(Dataset):
    """A dataset of CSV rows whose image errors name the CSV and the row's line (a DataValidationError).

    Validation reads only an image's header and last bytes: a file whose pixels do not decode passes it and
    fails here, at prediction.
    """

    def __init__(self, dataset: Dataset, rows: pd.DataFrame):
        self.dataset, self.csv = dataset, str(rows.attrs.get("csv", ""))
        self.lines = rows["line"].tolist() if "line" in rows else [None] * len(rows)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except ImageLoadError as err:
            if not self.csv:  # rows not read from a CSV: the image's own error
                raise
            raise _data.DataValidationError([_data.DataProblem(self.csv, self.lines[index], str(err))]) from err


@dataclass
class Prediction:
    """What a :class:`Predictor` returns for a set of rows.

    Attributes:
        frame: The official DataFrame: ``image_name`` and one int64 column per head (``task.submission_columns``),
            in the rows' order.
        rows: The rows predicted (validated CSV rows; labels when the CSV has them).
        probabilities: ``{column: (N, C)}``, the members' weighted mean.
        member_probabilities: The same per member.
        seconds: Wall time of reading and predicting.
    """

    frame: pd.DataFrame
    rows: pd.DataFrame
    probabilities: dict[str, np.ndarray]
    member_probabilities: list[dict[str, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0

    def predictions(self, task: Task) -> np.ndarray:
        """``(N, n_heads)`` class indices (argmax of :attr:`probabilities`)."""
        return _predictions(task, self.probabilities)


class Predictor:
    """Predict with one model or an ensemble, on the CPU or a device, with test-time augmentation.

    Args:
        members: The model(s) (:func:`load_members`); all must be of one task.
        tta: Test-time augmentation mode (:data:`fh_utils.training.tta.TTA_MODES`).
        batch_size: Crops per forward pass.
        device: Where the networks run (submissions: the CPU, as the scoring server).

    Example:
        >>> predictor = Predictor.load("outputs/runs/my-st2-run", tta="none")  # doctest: +SKIP
        >>> predictor.predict_csv("Fashion-How24_sub2_test.csv", "test/").frame  # doctest: +SKIP
    """

    def __init__(self, members: list[Member], tta: str = "none", batch_size: int = 64,
                 device: str | torch.device = "cpu"):  # fmt: skip
        if not members:
            raise ValueError("a Predictor needs at least one model")
        self.members = members
        self.task = members_task(members)
        self.tta = check_tta(tta)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | Path, tta: str = "none", **kwargs) -> Predictor:
        """A Predictor from a model file or a folder holding one (a run, a saved ensemble, an int8 export)."""
        return cls(load_members(path), tta, **kwargs)

    @property
    def weights(self) -> list[float]:
        """Each member's weight in the average."""
        return [m.weight for m in self.members]

    def size_mb(self) -> float:
        """Summed saved size of the members, MB (what the task's budget limits)."""
        return check_budget(self.members, self.task, size_budget=False)

    @property
    def network(self) -> torch.nn.Module:
        """The one model, wrapped in its TTA (on :attr:`device`, eval mode); an ensemble has none."""
        if len(self.members) != 1:
            raise ValueError(f"an ensemble of {len(self.members)} members has no single network")
        return with_tta(self.members[0].model.to(self.device).eval(), self.tta)

    @torch.inference_mode()
    def member_probabilities(self, rows: pd.DataFrame, root: str | Path = ".",
                             progress: bool = False) -> list[dict[str, np.ndarray]]:  # fmt: skip
        """Every member's ``{column: (N, C) probabilities}`` for validated CSV rows, in their order.

        Members that share an input share one pass over the crops; each gets the crops its run validated on.
        """
        from tqdm.auto import tqdm

        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.members):
            groups.setdefault(m.input_key(), []).append(i)
        out: list[dict[str, list]] = [{h.column: [] for h in self.task.heads} for _ in self.members]
        for (img_size, spaces, margin, crop, resize, pad), idx in groups.items():
            letterbox = {"resize": resize, "pad_value": pad} if pad is not None else {}
            dataset = create_dataset(root, self.task, "test", train=False, df=rows, img_size=img_size,
                                     augment="none", crop_prob=float(crop), crop_margin=margin,
                                     color_spaces=spaces, **letterbox)  # fmt: skip
            loader = DataLoader(_RowsNamed(dataset, rows), batch_size=self.batch_size, shuffle=False, num_workers=0)
            models = [with_tta(self.members[i].model.to(self.device).eval(), self.tta) for i in idx]
            for x, _ in tqdm(loader, desc="predict", leave=False, disable=not progress):
                x = x.to(self.device)
                for i, model in zip(idx, models):
                    logits = model(x)
                    for h in self.task.heads:
                        out[i][h.column].append(logits[h.column].float().softmax(1).cpu())
        return [{k: torch.cat(v).numpy() for k, v in o.items()} for o in out]

    def frame(self, rows: pd.DataFrame, probabilities: dict[str, np.ndarray]) -> pd.DataFrame:
        """The official DataFrame for ``rows``: ``image_name`` and one int64 class column per head."""
        preds = _predictions(self.task, probabilities)
        frame = pd.DataFrame({"image_name": rows["image_name"].to_numpy()})
        for j, h in enumerate(self.task.heads):
            frame[h.key] = preds[:, j]
        return frame

    def predict_rows(self, rows: pd.DataFrame, root: str | Path = ".", progress: bool = False) -> Prediction:
        """Predict validated CSV rows (:func:`fh_utils.data.reader.read_csv`; their ``path`` column is read).

        Raises:
            fh_utils.data.reader.DataValidationError: An image that does not decode, with the CSV and the line.
        """
        start = time.perf_counter()
        per_member = self.member_probabilities(rows, root, progress)
        probs = average_probabilities(per_member, self.weights)
        return Prediction(self.frame(rows, probs), rows, probs, per_member, time.perf_counter() - start)

    def predict_csv(self, csv: str | Path, images_dir: str | Path, progress: bool = False) -> Prediction:
        """Read and validate a CSV in the FASHION-HOW layout (labels optional) and predict every row in its order.

        Raises:
            fh_utils.data.reader.DataValidationError: A bad row or image, with the file and line (a missing
                image or one whose header does not read when the CSV is read; one whose pixels do not decode
                when it is predicted).
        """
        start = time.perf_counter()
        csv = Path(csv)
        rows = _data.read_csv(csv, self.task, images_dir, labels_optional=True)
        prediction = self.predict_rows(rows, csv.parent, progress)
        prediction.seconds = time.perf_counter() - start
        return prediction

    def evaluate(self, loader: DataLoader, progress: bool = False) -> dict:
        """Score the one model with its TTA on a labelled loader (:func:`fh_utils.training.engine.evaluate`).

        The final evaluation of notebooks 03/04: the decode-once cache's crops equal the file crops of
        :meth:`predict_csv` bit for bit, so both score the same.
        """
        from fh_utils.training.engine import evaluate

        return evaluate(self.network, loader, self.task, self.device, progress=progress)
