"""What a packaged leaderboard submission runs: predict the hidden test set, and check a local dry run.

The FASHION-HOW platform runs a team's ``task.ipynb`` on its own CPU, offline, calls ``submit()()`` and scores
the DataFrame that comes back. The notebook :mod:`fh_utils.leaderboard.package` writes puts this package (as
the zip archive ``fh_utils.zip``, which the platform client's upload rule keeps) on ``sys.path`` inside its
function and calls :func:`predict_test_set`; with an empty key its last cell calls :func:`dry_run` instead of
the client's upload.

The test data sit in ``/aif/Dataset`` on the server: ``Fashion-How24_sub1_test.csv`` or
``Fashion-How24_sub2_test.csv``, images under ``test/``. ``$FH_AIF_DATASET`` points a dry run at a folder laid
out the same way (the server never sets it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fh_utils.runs import SUBMISSION_SPEC_FILE

DATASET_ENV = "FH_AIF_DATASET"
DEFAULT_DATASET = "/aif/Dataset"
CODE_ARCHIVE = "fh_utils.zip"
TEST_IMAGES = "test"


class SubmissionCheckError(ValueError):
    """The DataFrame a submission returned would not score: every problem found, one per line."""


def dataset_dir(dataset: str | Path | None = None) -> Path:
    """The test data folder: ``dataset``, else ``$FH_AIF_DATASET``, else ``/aif/Dataset`` (the server's)."""
    return Path(dataset or os.environ.get(DATASET_ENV) or DEFAULT_DATASET)


def test_csv(dataset: str | Path, task: Any) -> Path:
    """The test CSV of ``task`` (a :class:`fh_utils.tasks.Task` or its name) in a dataset folder."""
    from fh_utils.tasks import get_task

    return Path(dataset) / get_task(task).csv_name("test")


def read_spec(model_dir: str | Path) -> dict[str, Any]:
    """The packaged ``model/submission.json``: task, model file, TTA mode, members and their weights."""
    from fh_utils.io import read_json

    path = Path(model_dir) / SUBMISSION_SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the notebook from its submission folder (./model/ beside it)")
    return read_json(path)


def check_code_origin(code: str | Path | None) -> None:
    """Refuse to run when ``fh_utils`` was imported from somewhere else than the packaged archive ``code``.

    A kernel that imported the workbook before would predict with its code, not the packaged one.
    """
    if code is None:
        return
    import fh_utils

    origin = Path(fh_utils.__file__).resolve()
    archive = Path(code).resolve()
    if archive not in origin.parents:
        raise ImportError(f"fh_utils was imported from {origin}, not from the packaged {archive}: run task.ipynb "
                          "in a fresh kernel or interpreter")  # fmt: skip


def predict_test_set(
    model_dir: str | Path = "./model",
    dataset: str | Path | None = None,
    code: str | Path | None = None,
    threads: int = 0,
) -> pd.DataFrame:
    """Predict the test CSV as the packaged ``task.ipynb`` does; the official DataFrame in the CSV's row order.

    Args:
        model_dir: The packaged ``model/`` folder (``submission.json`` and the weights).
        dataset: Test data folder (:func:`dataset_dir`).
        code: The archive this package was imported from (checked when given).
        threads: CPU threads for torch; 0 keeps torch's default (all cores).
    """
    import torch

    from fh_utils.inference.predictor import Predictor

    check_code_origin(code)
    if threads:
        torch.set_num_threads(int(threads))
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    predictor = Predictor.load(model_dir / spec["model_file"], tta=spec.get("tta", "none"))
    if predictor.task.name != spec["task"]:
        raise ValueError(f"{model_dir / spec['model_file']} holds a {predictor.task.name} model, the spec says "
                         f"{spec['task']}")  # fmt: skip
    folder = dataset_dir(dataset)
    return predictor.predict_csv(test_csv(folder, predictor.task), folder / TEST_IMAGES).frame


def check_frame(frame: Any, csv: str | Path, task: Any) -> pd.DataFrame:
    """Check a submission DataFrame against its test CSV; the CSV's rows (read as plain text) when it passes.

    Checks: a pandas DataFrame with exactly the official columns in order, integer class columns without
    missing values, classes in range for each head, one row per CSV row in the CSV's order (``image_name``
    equal row for row: no missing, extra or reordered rows).

    Raises:
        SubmissionCheckError: Every problem found.
    """
    from fh_utils.tasks import get_task

    task = get_task(task)
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    problems = []
    if not isinstance(frame, pd.DataFrame):
        raise SubmissionCheckError(f"submit()() returned {type(frame).__name__}, not a pandas DataFrame")
    columns = task.submission_columns
    if list(frame.columns) != columns:
        problems.append(f"columns {list(frame.columns)}, expected {columns}")
    if len(frame) != len(rows):
        problems.append(f"{len(frame)} rows for the {len(rows)} rows of {csv}")
    if "image_name" in frame:
        names, expected = frame["image_name"].astype(str).str.strip().to_numpy(), rows["image_name"].str.strip()
        n = min(len(names), len(expected))
        wrong = np.flatnonzero(names[:n] != expected.to_numpy()[:n])
        if len(wrong):
            i = int(wrong[0])
            problems.append(f"{len(wrong)} rows out of the CSV's order; first at row {i}: {names[i]!r} where the CSV "
                            f"has {expected.iloc[i]!r}")  # fmt: skip
    for head in task.heads:
        if head.key not in frame:
            continue
        values = frame[head.key]
        if values.isna().any():
            problems.append(f"{head.key}: {int(values.isna().sum())} missing values")
        elif not pd.api.types.is_integer_dtype(values):
            problems.append(f"{head.key}: dtype {values.dtype}, expected integers")
        else:
            bad = values[(values < 0) | (values >= head.num_classes)]
            if len(bad):
                problems.append(f"{head.key}: {len(bad)} values outside 0..{head.num_classes - 1} (e.g. {bad.iloc[0]})")
    if problems:
        raise SubmissionCheckError(f"the submission would not score ({csv}):\n  " + "\n  ".join(problems))
    return rows


def score_frame(frame: pd.DataFrame, rows: pd.DataFrame, task: Any) -> dict[str, Any] | None:
    """The task score of a checked DataFrame when the CSV rows have labels (a val split laid out as test)."""
    from fh_utils.tasks import get_task
    from fh_utils.training.metrics import task_metrics

    task = get_task(task)
    if not all(c in rows for c in task.label_columns):
        return None
    y_true = rows[task.label_columns].astype(np.int64).to_numpy()
    return task_metrics(task, y_true, frame[[h.key for h in task.heads]].to_numpy())


def dry_run(submit: Any, model_dir: str | Path = "./model", dataset: str | Path | None = None) -> dict[str, Any]:
    """The packaged notebook's local check with an empty key: call ``submit()()`` and check what it returns.

    Calls the function exactly as the server does, times it, checks the DataFrame (:func:`check_frame`) and
    prints the time and, when the CSV has labels, the score. Never uploads anything.

    Returns:
        ``{"rows", "seconds", "score", "task", "csv", "frame"}`` (``score`` None without labels; ``frame`` the
        DataFrame returned).

    Raises:
        SubmissionCheckError: The DataFrame would not score.
    """
    spec = read_spec(model_dir)
    folder = dataset_dir(dataset)
    csv = test_csv(folder, spec["task"])
    print(f"dry run of {spec['name']} ({spec['task']}, {spec['kind']}, tta {spec.get('tta', 'none')}) on {csv}; "
          "nothing is uploaded", flush=True)  # fmt: skip
    start = time.perf_counter()
    frame = submit()()
    seconds = time.perf_counter() - start
    rows = check_frame(frame, csv, spec["task"])
    metrics = score_frame(frame, rows, spec["task"])
    score = None if metrics is None else metrics["score"]
    print(f"submit()() returned {len(frame):,} rows in {seconds:.1f} s: columns, dtypes, classes and row order OK")
    if score is None:
        print("the CSV has no labels: not scored")
    else:
        print(f"score ({spec['metric']}): {score:.4f}; validation recorded {spec.get('validated_score')}")
    sys.stdout.flush()
    return {"rows": len(frame), "seconds": seconds, "score": score, "task": spec["task"], "csv": str(csv),
            "frame": frame}
