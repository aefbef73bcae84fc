"""The dry run of a packaged submission: its function run as the server runs it, in a fresh interpreter.

:func:`dry_run_submission` runs the notebook's function in an interpreter that can import neither the installed
workbook nor what the server lacks (its driver is ``templates/dry_run_driver.py``); :func:`dry_run_on_split` lays
out the package's task from the data root its runs trained on (recorded in their ``config.json``, never in the
upload) and reads the CSVs through the validated reader, so a missing or malformed CSV is a
:class:`fh_utils.data.reader.DataValidationError` naming the file and line, after the folder is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.data.reader import DataProblem, DataValidationError
from fh_utils.inference.aif import DATASET_ENV, TEST_IMAGES
from fh_utils.inference.predictor import label_arrays
from fh_utils.io import read_json, write_json, write_text
from fh_utils.leaderboard.package import (
    PackagedSubmission,
    dry_run_report,
    training_data_roots,
    training_on_error,
)  # fmt: skip
from fh_utils.leaderboard.template import MODEL_DIR, NOTEBOOK_FILE, notebook_script
from fh_utils.paths import outputs_dir, project_root, resolve_data_root
from fh_utils.runs import CONFIG_FILE, SUBMISSION_SPEC_FILE, find_run_folder
from fh_utils.tasks import get_task

# Importable in the workbook's environment but not where the platform scores (the seed's task.ipynb needed
# torch, timm, numpy, pandas, OpenCV, albumentations and Pillow): the dry run fails if the function imports one.
SERVER_LACKS = ("sklearn", "matplotlib", "seaborn", "optuna", "optuna_dashboard", "papermill", "nbformat", "nbconvert",
                "nbclient", "jupyter_client", "ipykernel", "IPython", "rembg", "onnxruntime", "psycopg", "sqlalchemy",
                "tensorboard", "aifactory")  # fmt: skip


class DataRootError(ValueError):
    """The dry run cannot tell which data root to lay out: the packaged runs trained on different ones."""


# What :func:`dry_run_on_split` raises before the dry run starts, each with a message naming the file, the data
# root or the runs (the submission folder is already written): what the command line reports without a traceback.
DRY_RUN_SETUP_ERRORS = (DataValidationError, DataRootError, FileNotFoundError)


DRIVER = Path(__file__).resolve().parent / "templates" / "dry_run_driver.py"


def layout_test_set(
    data_root: str | Path,
    out: str | Path,
    split: str = "val",
    tasks: tuple[str, ...] = ("st1", "st2"),
    limit: int = 0,
    extra_split: str = "",
    on_error: str = "raise",
) -> Path:
    """Lay out a split of ``data_root`` the way the server's ``/aif/Dataset`` is (for a dry run), in ``out``.

    Writes ``out/Fashion-How24_sub{1,2}_test.csv`` of each of ``tasks`` (the split's rows, labels kept so the
    dry run can score) and ``out/test/<image_name>`` as symbolic links to the images (copies where links fail).
    The raw data is only read, through :func:`fh_utils.data.reader.read_split` (``on_error`` as there): the
    test CSV holds the split's columns, its values as text. ``limit`` keeps the first rows; ``extra_split``
    tops them up to ``limit`` from another split.

    Raises:
        fh_utils.data.reader.DataValidationError: A missing or malformed CSV, a missing image, ... (file, line).
    """
    from fh_utils.data.reader import find_data_dir, read_split

    find_data_dir(data_root)  # the data root's own error first (missing, or no CSV at all)
    out = Path(out)
    (out / TEST_IMAGES).mkdir(parents=True, exist_ok=True)
    added = ("path", "line", "width", "height")  # what read_split adds to the CSV's columns
    for name in tasks:
        task = get_task(name, data_root)
        frames = []
        for part in (split, extra_split) if extra_split else (split,):
            frame = read_split(data_root, task, part, on_error=on_error)
            columns = [c for c in frame.columns if c not in added]
            frames.append(frame[columns].astype(str).assign(_src=frame["path"]))
        rows = pd.concat(frames, ignore_index=True)
        if limit:
            rows = rows.head(limit)
        rows = rows.drop_duplicates("image_name")
        for image_name, src in zip(rows["image_name"], rows["_src"]):
            dest, target = out / TEST_IMAGES / image_name, Path(src).resolve()
            if (dest.resolve() == target) if dest.is_symlink() else dest.exists():  # linked already, or a copy
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)  # a link into another data root's image of that name
            try:
                dest.symlink_to(target)
            except OSError:
                shutil.copyfile(src, dest)
        write_text(out / task.csv_name("test"), rows.drop(columns="_src").to_csv(index=False))
    return out


# The fresh interpreter of the dry run: the installed workbook cannot be imported (its editable finder and the
# checkout are removed from the import system, which is asserted); the packaged script runs as a module (its
# upload cell never runs), its submit() goes through the dry run, and importing anything the server lacks fails
# it (checked on sys.modules afterwards: torch probes optional packages with find_spec, which must not fail).
@dataclass
class DryRun:
    """A dry run of a packaged submission in a fresh interpreter.

    Attributes:
        rows: Rows the function returned (checked against the CSV).
        seconds: Time of ``submit()()`` alone (model loading, reading, predicting; the packages it imports were
            imported before, timed as ``imports_seconds``).
        total_seconds: The whole process: interpreter start and imports included.
        score: The score when the CSV has labels, else None.
        predictions: The DataFrame ``submit()()`` returned.
        output: What the process printed.
        fh_utils_file: Where the process imported ``fh_utils`` from (inside the packaged archive).
        modules: Top-level modules the process had imported.
    """

    rows: int
    seconds: float
    total_seconds: float
    score: float | None
    predictions: pd.DataFrame
    output: str
    fh_utils_file: str = ""
    modules: list[str] = field(default_factory=list)
    dataset: Path = Path()
    task: str = ""
    imports_seconds: float = 0.0
    trained_on_rows: str = ""  # set when the runs trained on rows of the split scored: then never a validation score

    def score_line(self) -> str:
        """The score as a person should read it: a validation score, or one on rows the runs trained on."""
        if self.score is None:
            return "no score (the CSV has no labels)"
        if self.trained_on_rows:
            where = f"on rows the runs trained on ({self.trained_on_rows})"
            return f"score {self.score:.4f} {where}: not a validation score"
        return f"validation score {self.score:.4f}"

    def labels(self) -> tuple[Any, Any] | None:
        """``(y_true, y_pred)`` arrays ``(N, n_heads)`` when the dry run's CSV has labels, else None."""
        task = get_task(self.task)
        return label_arrays(task, pd.read_csv(Path(self.dataset) / task.csv_name("test")), self.predictions)


def dry_run_submission(folder: str | Path, dataset: str | Path, threads: int = 0, timeout: float = 1800) -> DryRun:
    """Run a packaged submission's ``submit()()`` as the server would, in a fresh interpreter, and check it.

    The interpreter runs in the submission folder with ``$FH_AIF_DATASET`` pointing at ``dataset`` (a folder
    laid out like ``/aif/Dataset``, see :func:`layout_test_set`); it cannot import the installed workbook, and
    importing a package the server lacks (:data:`SERVER_LACKS`) fails it. It runs the script
    ``jupyter nbconvert --to python`` makes of ``task.ipynb`` and calls :func:`fh_utils.inference.aif.dry_run`.
    Nothing is uploaded, whatever the notebook's key.

    Raises:
        RuntimeError: The process failed, with its output.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="fh-dry-run-") as tmp:
        tmp = Path(tmp)
        script, driver, report = tmp / "task.py", tmp / "driver.py", tmp / "report.json"
        script.write_text(notebook_script(folder / NOTEBOOK_FILE), encoding="utf-8")
        driver.write_text(DRIVER.read_text(encoding="utf-8"), encoding="utf-8")
        out_csv = tmp / "predictions.csv"
        env = {**os.environ, DATASET_ENV: str(Path(dataset).resolve())}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        command = [sys.executable, "-I", str(driver), str(script), str(project_root()), str(report), str(out_csv),
                   ",".join(SERVER_LACKS)]  # fmt: skip
        proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        total = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"the dry run of {folder} failed (exit {proc.returncode}):\n{output}")
        result = json.loads(report.read_text(encoding="utf-8"))
        predictions = pd.read_csv(out_csv)
    return DryRun(result["rows"], result["seconds"], total, result["score"], predictions, output,
                  result["fh_utils_file"], result["modules"], Path(dataset), result["task"],
                  result["imports_seconds"])  # fmt: skip


def _package_data_roots(folder: Path, spec: dict[str, Any]) -> dict[str, list[str]]:
    """The training data roots of a submission folder given by path.

    From the runs its ``submission.json`` names (``source``, the members' ``run``) where they still exist, else
    from its last dry-run report.
    """
    named = spec.get("source") or [m.get("run") for m in spec.get("members", [])]
    sources = [found for found in (find_run_folder(s) for s in named if s) if found is not None]
    if sources:
        return training_data_roots(sources)
    report = dry_run_report(folder)
    return dict(read_json(report).get("trained_on", {})) if report.is_file() else {}


def dry_run_data_root(
    package: PackagedSubmission | str | Path, data_root: str | Path = ""
) -> tuple[Path, dict[str, list[str]]]:
    """The data root :func:`dry_run_on_split` lays out, and the data roots the package's runs trained on.

    ``data_root`` when given; else the one data root the packaged runs trained on (their ``config.json``);
    else, when no run recorded one, the default data root.

    Raises:
        DataRootError: The runs trained on different data roots and none is given (each named with its runs).
        fh_utils.data.reader.DataValidationError: The data root the runs trained on is no longer there.
    """
    if isinstance(package, PackagedSubmission):
        trained = package.data_roots
    else:
        folder = Path(package)
        trained = _package_data_roots(folder, _read_spec(folder))
    if str(data_root):
        return resolve_data_root(str(data_root)), trained
    if len(trained) > 1:
        listing = "\n".join(f"  {root}: {', '.join(Path(r).name for r in runs)}" for root, runs in trained.items())
        raise DataRootError(f"the packaged runs trained on {len(trained)} data roots:\n{listing}\n"
                            "pass data_root (--data-root) to choose the one the dry run lays out")  # fmt: skip
    if not trained:
        return resolve_data_root(""), trained
    root, runs = next(iter(trained.items()))
    if not Path(root).exists():
        msg = (f"data root does not exist (the one {', '.join(Path(r).name for r in runs)} trained on, from "
               "config.json); pass data_root (--data-root) to dry-run on another")  # fmt: skip
        raise DataValidationError([DataProblem(root, None, msg)])
    return Path(root), trained


def _read_spec(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_DIR / SUBMISSION_SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a submission folder written by package_submission")
    return read_json(path)


def trained_rows_note(trained: dict[str, list[str]], root: Path, split: str) -> str:
    """Why a dry run's score is not a validation score, or ``""`` when it is.

    A run with ``split="full"`` trained on train and val; one with ``split="fold:K/N"`` on every other fold's rows
    of both. Scored on the train or val split of the data root they trained on, they score rows they learnt.
    """
    if split not in ("train", "val"):
        return ""
    splits = []
    for data_root, runs in trained.items():
        if Path(data_root).resolve() != Path(root).resolve():
            continue
        for run in runs:
            config = Path(run) / CONFIG_FILE
            run_split = str((read_json(config).get("data") or {}).get("split", "val")) if config.is_file() else "val"
            if run_split == "full" or run_split.startswith("fold:") or split == "train":
                splits.append(f"{Path(run).name}: split={run_split}")
    return "; ".join(splits)


def dry_run_on_split(
    package: PackagedSubmission | str | Path, data_root: str | Path = "", split: str = "val", limit: int = 0
) -> DryRun:
    """Lay out a split of a data root as ``/aif/Dataset`` (under ``outputs/aif_dataset/``) and dry-run on it.

    ``data_root`` empty: the data root the packaged runs trained on (:func:`dry_run_data_root`). Only the
    package's task is laid out, its CSV read through the validated reader. The val split has labels, so the dry
    run scores: for a run validated on the whole split, exactly the score of its ``metrics.json``. The result,
    with the data root, is written to :func:`dry_run_report` (beside the folder, never in it).

    Raises:
        DataRootError, fh_utils.data.reader.DataValidationError, FileNotFoundError: Before the dry run starts
            (:data:`DRY_RUN_SETUP_ERRORS`), each naming the data root, file or runs; the folder stays as written.
        RuntimeError: The dry run's process failed, with its output.
    """
    folder = package.folder if isinstance(package, PackagedSubmission) else Path(package)
    spec = _read_spec(folder)
    root, trained = dry_run_data_root(package, data_root)
    root = root.resolve()
    on_error = "raise" if str(data_root) or len(trained) != 1 else training_on_error(next(iter(trained.values())))
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]  # two data roots of one name never share a layout
    dataset = outputs_dir() / "aif_dataset" / f"{root.name}-{tag}-{split}{f'-{limit}' if limit else ''}" / "Dataset"
    layout_test_set(root, dataset, split, tasks=(spec["task"],), limit=limit, on_error=on_error)
    dry = dry_run_submission(folder, dataset)
    dry.trained_on_rows = trained_rows_note(trained, root, split)
    write_json(dry_run_report(folder), {"submission": str(folder), "data_root": str(root), "trained_on": trained,
                                        "score_is": dry.score_line(),
                                        "dataset": str(dataset), "rows": dry.rows,
                                        "seconds": dry.seconds, "total_seconds": dry.total_seconds,
                                        "imports_seconds": dry.imports_seconds,
                                        "score": dry.score, "validated_score": spec.get("validated_score"),
                                        "fh_utils_file": dry.fh_utils_file})  # fmt: skip
    return dry
