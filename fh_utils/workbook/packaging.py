"""From a run to the leaderboard: write the folder the FASHION-HOW platform scores, and dry-run it locally.

The platform never reads ``submission.csv``: its client (``aifactory.score``) zips the folder of the team's
``task.ipynb``, the server runs that notebook's function on its own CPU, offline, against the hidden test set,
and scores the DataFrame it returns. :func:`package_submission` writes one such folder per submission
(default ``outputs/submissions/<name>/``)::

    task.ipynb          the 2024 template's shape: etri_task{1,2}_submit(), submit(), the client's upload cell
    fh_utils.zip        this package without fh_utils/workbook/, imported from the archive inside the function
    model/
        best.pt | ensemble.pt | model_int8.pt   the weights (every member of an ensemble, with its weight)
        config.json     crop settings of a single run's best.pt (what its validation used)
        manifest.json   an ensemble's members
        submission.json task, model file, TTA mode, members, sizes, the validated score

The code ships as a zip archive because the client's upload rule drops every file whose folder path contains
``train``, ``drive`` or ``sample_data``: ``fh_utils/training/`` copied as a folder would vanish from the upload
without a word. The prediction runs :class:`fh_utils.inference.predictor.Predictor`, the object notebook 05
and the final evaluation of notebooks 03/04 use, so the crops and the TTA are those of validation.

Checked before the folder appears (each a clear error): a model file in every run, ST1 one model, the
members' size against the 25 MB budget (state dicts first, then the files written), and the client's zip rule
keeping every file (listed as the client lists them). :func:`dry_run_submission` then runs the notebook's
function in a fresh interpreter that can import neither the installed workbook nor what the server lacks;
:func:`dry_run_on_split` lays out the package's task from the data root its runs trained on (recorded in their
``config.json``, never in the upload) and reads the CSVs through the validated reader, so a missing or malformed
CSV is a :class:`fh_utils.data.reader.DataValidationError` naming the file and line, after the folder is written.
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
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import fh_utils
from fh_utils.data.reader import DataProblem, DataValidationError
from fh_utils.inference.aif import CODE_ARCHIVE, DATASET_ENV, SPEC_FILE, TEST_IMAGES
from fh_utils.inference.predictor import load_members, model_file
from fh_utils.io import read_json, write_json, write_text
from fh_utils.models.ensemble import (
    ENSEMBLE_FILE,
    MANIFEST_FILE,
    Member,
    build_ensemble,
    check_budget,
    check_ensemble_allowed,
    members_task,
    save_ensemble,
)  # fmt: skip
from fh_utils.models.export import INT8_FILE
from fh_utils.models.factory import RulesError
from fh_utils.paths import outputs_dir, project_root
from fh_utils.runs import BEST_CKPT, CONFIG_FILE, METRICS_FILE
from fh_utils.tasks import Task, get_task
from fh_utils.training.tta import check_tta

NOTEBOOK_FILE = "task.ipynb"
MODEL_DIR = "model"
CLIENT_SKIPPED_FOLDER_WORDS = ("train", "drive", "sample_data")  # aifactory.score.make_zip, folder path test
CLIENT_ARCHIVE = "aif.zip"
# Left out of fh_utils.zip: the workbook layer (notebooks, plots, sweeps) and the command line over it.
ARCHIVE_EXCLUDED = ("workbook", "__main__.py")
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


def submissions_dir() -> Path:
    """Folder holding one sub-folder per packaged submission (``outputs/submissions``)."""
    return outputs_dir() / "submissions"


# --- the platform client's upload rule ------------------------------------------------------------------------


def client_keeps(relative: str | Path) -> bool:
    """Whether ``aifactory.score.make_zip`` adds the file at ``relative`` (a path inside the submission folder).

    The client walks ``./`` and skips every file whose folder path (``./``, ``./model``, ...) contains
    ``train``, ``drive`` or ``sample_data``, and any file named like ``aif.zip``.
    """
    rel = Path(relative)
    folder = "./" if str(rel.parent) in ("", ".") else "./" + rel.parent.as_posix()
    return not any(word in folder for word in CLIENT_SKIPPED_FOLDER_WORDS) and CLIENT_ARCHIVE not in rel.name


def client_zip_listing(folder: str | Path) -> tuple[list[str], list[str]]:
    """The files the client's zip of ``folder`` holds, and those it drops, as the archive names them.

    Walks the folder as ``aifactory.score.make_zip`` does (``os.walk("./")`` from inside it).
    """
    folder = Path(folder)
    kept, dropped = [], []
    for path, _dirs, files in os.walk(folder):
        for name in files:
            rel = (Path(path) / name).relative_to(folder)
            (kept if client_keeps(rel) else dropped).append(rel.as_posix())
    return sorted(kept), sorted(dropped)


def make_client_zip(folder: str | Path, dest: str | Path) -> list[str]:
    """Build the upload archive of ``folder`` with the client's rule (what ``aif.submit`` would upload)."""
    folder, dest = Path(folder), Path(dest)
    kept, _ = client_zip_listing(folder)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in kept:
            archive.write(folder / rel, rel)
    return kept


# --- what goes into the folder -----------------------------------------------------------------------------------


def package_source() -> Path:
    """The folder of the ``fh_utils`` package imported now (what :func:`build_code_archive` ships)."""
    return Path(fh_utils.__file__).resolve().parent


def build_code_archive(dest: str | Path, source: str | Path | None = None) -> list[str]:
    """Zip the package's Python files (not ``workbook/``, not ``__main__.py``) into ``dest``; their names.

    The archive is reproducible (sorted names, fixed timestamps) and importable with ``sys.path.insert(0, dest)``.
    """
    source = Path(source) if source is not None else package_source()
    names = []
    for path in sorted(source.rglob("*.py")):
        rel = path.relative_to(source)
        if rel.parts[0] in ARCHIVE_EXCLUDED or "__pycache__" in rel.parts:
            continue
        names.append((path, f"{source.name}/{rel.as_posix()}"))
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, arcname in names:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return [a for _, a in names]


def function_name(task: Task) -> str:
    """The template's name of the inference function: ``etri_task1_submit`` (ST1) or ``etri_task2_submit``."""
    return f"etri_task{task.csv_prefix[-1]}_submit"


def _code_cell(source: str, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags} if tags else {},
            "outputs": [], "source": source.strip("\n")}  # fmt: skip


def _markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.strip("\n")}


def task_notebook(spec: dict[str, Any], task: Task, key: str = "", model_dir: str = MODEL_DIR) -> dict:
    """The packaged ``task.ipynb`` (nbformat 4 JSON) in the 2024 template's shape, for ``spec`` (submission.json).

    No IPython magics: ``jupyter nbconvert --to python`` of it is a plain script.
    """
    fn = function_name(task)
    members = "".join(f"\n| {Path(m['run']).name} | {m['weight']:g} | {m['size_mb']:.2f} | {m.get('score')} |"
                      for m in spec["members"])  # fmt: skip
    intro = f"""
# FASHION-HOW {task.name.upper()} submission: `{spec['name']}`

{task.title}. Written by fashion-how-workbook on {spec['created']} (`python -m fh_utils package`); model
`{model_dir}/{spec['model_file']}` ({spec['kind']}, {spec['size_mb']:.2f} MB of the {spec['budget_mb']:g} MB budget),
test-time augmentation `{spec['tta']}`, validated score ({spec['metric']}) {spec.get('validated_score')}.

| member | weight | MB | validated score |
|---|---|---|---|{members}

`{fn}()` reads `/aif/Dataset/{task.csv_name('test')}` with its images under `/aif/Dataset/test/` (or the folder
in `${DATASET_ENV}`, for a local dry run only), predicts on the CPU with the packaged `{CODE_ARCHIVE}` (the
workbook's own preprocessing and models) and returns the DataFrame `{', '.join(task.submission_columns)}` in the
CSV's row order. With `KEY` empty, the last cell is a local dry run: it calls `submit()()`, checks the DataFrame
and prints the time and, when the CSV has labels, the score. Nothing is uploaded until `KEY` is set.
"""
    parameters = f"""
KEY = {json.dumps(key)}  # the team's key on the platform; empty: a local dry run that never uploads
MODEL_NAME = {json.dumps(spec['model_name'])}  # the name the leaderboard shows for this submission
"""
    function = f'''
def {fn}():
    """Predict the test set; every import inside the function, as the template requires."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=os.environ.get("{DATASET_ENV}", "/aif/Dataset"))
    parser.add_argument("--model-dir", default="./{model_dir}")
    args, _ = parser.parse_known_args()
    code = os.path.abspath("./{CODE_ARCHIVE}")
    if code not in sys.path:
        sys.path.insert(0, code)
    from fh_utils.inference.aif import predict_test_set

    return predict_test_set(args.model_dir, args.dataset, code=code)
'''
    submit = f"""
def submit():
    return {fn}
"""
    last = f"""
if __name__ == "__main__":
    if KEY:
        import aifactory.score as aif

        aif.submit(model_name=MODEL_NAME, key=KEY, func=submit)
    else:
        import os
        import sys

        sys.path.insert(0, os.path.abspath("./{CODE_ARCHIVE}"))
        from fh_utils.inference.aif import dry_run

        dry_run(submit, "./{model_dir}")
"""
    cells = [_markdown_cell(intro), _code_cell(parameters, ["parameters"]), _code_cell(function),
             _code_cell(submit), _code_cell(last)]  # fmt: skip
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return {"cells": cells, "metadata": {"kernelspec": kernel, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


def notebook_script(notebook: str | Path) -> str:
    """The script ``jupyter nbconvert --to python`` makes of a notebook (refused if it needs IPython magics)."""
    from nbconvert import PythonExporter

    script, _ = PythonExporter().from_filename(str(notebook))
    if "get_ipython()" in script:
        raise ValueError(f"{notebook}: holds IPython magics; the converted script would not run in plain Python")
    return script


# --- packaging ------------------------------------------------------------------------------------------------


@dataclass
class PackagedSubmission:
    """A written submission folder.

    Attributes:
        folder: The submission folder (``task.ipynb``, ``fh_utils.zip``, ``model/``).
        spec: Its ``model/submission.json``.
        files: Every file in it, as the client's zip lists them.
        task: The task.
        data_roots: The data roots the packaged runs trained on (``config.json``'s ``data.data_root``), each with
            the runs that did: where :func:`dry_run_on_split` lays out its split by default. Kept out of the
            folder (the upload holds no local path).
    """

    folder: Path
    spec: dict[str, Any]
    files: list[str]
    task: Task
    data_roots: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        s = self.spec
        lines = [f"submission {s['name']} ({self.task.name}, {s['kind']}, tta {s['tta']}) in {self.folder}",
                 f"model      {MODEL_DIR}/{s['model_file']}: {s['file_mb']:.2f} MB of files, "
                 f"{s['size_mb']:.2f} MB of weights, budget {s['budget_mb']:g} MB",
                 f"validated  {s['metric']} {s.get('validated_score')}",
                 "upload     " + ", ".join(self.files)]  # fmt: skip
        return "\n".join(lines)


def _validated_score(run: Path, tta: str) -> float | None:
    """What the run's validation scored with ``tta`` (``metrics.json``), or None when not recorded."""
    path = run / METRICS_FILE
    if not path.is_file():
        return None
    metrics = read_json(path)
    if tta == "none":
        return metrics.get("score")
    return metrics.get("tta_score") if metrics.get("tta") == tta else None


def _recorded_tta(run: Path) -> str:
    path = run / METRICS_FILE
    return check_tta(read_json(path).get("tta", "none")) if path.is_file() else "none"


def _load(runs: list[Path], weights: list[float] | None) -> tuple[list[Member], str, Path | None]:
    """The members, the kind (run, int8, ensemble) and the model file to copy (None: write an ensemble)."""
    if len(runs) > 1:
        return build_ensemble(runs, weights, enforce_rules=True, size_budget=False), "ensemble", None
    src = model_file(runs[0])
    if src is None:
        raise FileNotFoundError(f"{runs[0]} has no {BEST_CKPT} (nor {ENSEMBLE_FILE} / {INT8_FILE}): train the run "
                                "to at least one validated epoch, or name another run")  # fmt: skip
    members = load_members(src)
    kind = {BEST_CKPT: "run", INT8_FILE: "int8", ENSEMBLE_FILE: "ensemble"}[src.name]
    return members, kind, src


def _write_model(folder: Path, members: list[Member], kind: str, src: Path | None) -> str:
    """Write the weights into ``folder``; the model file's name. Only what the prediction loads."""
    folder.mkdir(parents=True)
    if kind == "ensemble":
        return save_ensemble(members, folder).name
    shutil.copyfile(src, folder / src.name)
    if kind == "run":
        # member_from_run reads the crop settings of a best.pt from config.json: the run's, without its paths.
        write_json(folder / CONFIG_FILE, {"data": members[0].data, "task": {"name": members_task(members).name}})
    return src.name


def _trained_runs(source: Path, depth: int = 0) -> list[Path]:
    """The run folders behind a packaged source whose ``config.json`` records the data they trained on.

    A run or an int8 export (its ``config.json`` is the run's): itself. A saved ensemble (``manifest.json``): its
    members' runs, where they still exist.
    """
    config = source / CONFIG_FILE
    if config.is_file() and read_json(config).get("data", {}).get("data_root"):
        return [source]
    manifest = source / MANIFEST_FILE
    if depth or not manifest.is_file():
        return []
    runs = [Path(m["run"]) for m in read_json(manifest).get("members", []) if m.get("run")]
    return [r for run in runs if run.is_dir() for r in _trained_runs(run, depth + 1)]


def training_data_roots(sources: list[str | Path]) -> dict[str, list[str]]:
    """The data roots ``sources`` (runs, int8 exports, saved ensembles) trained on, each with its runs.

    Read from the runs' ``config.json`` (``data.data_root``); a source that records none adds nothing.
    """
    from fh_utils.workbook.workflow import resolve_data_root

    roots: dict[str, list[str]] = {}
    for source in map(Path, sources):
        for run in _trained_runs(source):
            root = str(resolve_data_root(read_json(run / CONFIG_FILE)["data"]["data_root"]))
            roots.setdefault(root, []).append(str(run))
    return roots


def _training_on_error(runs: list[str]) -> str:
    """``"skip"`` when every run skipped bad CSV rows (``data.on_error``), so the dry run scores their rows."""
    modes = {read_json(Path(r) / CONFIG_FILE).get("data", {}).get("on_error", "raise") for r in runs}
    return "skip" if modes == {"skip"} else "raise"


def _weights_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.pt")) / 1e6


def package_submission(
    run_dir: str | Path | list[str | Path],
    task: str = "",
    out_dir: str | Path = "",
    model_name: str = "",
    tta: str = "",
    key: str = "",
    weights: str | list[float] = "",
    name: str = "",
    model_dir: str = MODEL_DIR,
    overwrite: bool = True,
) -> PackagedSubmission:
    """Write the folder the platform scores for a run, a saved ensemble, an int8 export or several runs.

    Args:
        run_dir: As notebook 05 takes it: a run folder (a path from the working directory or the repository
            root, or a name under ``outputs/runs``), a saved ensemble or int8 export folder, several runs
            comma-separated (an ST2 ensemble), or a JSON list of them (notebook 06's ``top_k.json``).
        task: ``"st1"`` / ``"st2"``; empty: the runs' own (a mismatch is an error).
        out_dir: The submission folder; empty: ``outputs/submissions/<name>``.
        model_name: The name the leaderboard shows; empty: ``name``.
        tta: Test-time augmentation; empty: the mode the run's final evaluation recorded (else ``"none"``).
        key: The team's key, written into ``task.ipynb`` (empty: its last cell is a dry run that never uploads).
        weights: Ensemble weights, one per run.
        name: Submission name; empty: the run's folder name (``<task>-ensemble<n>-<time>`` for several runs).
        model_dir: Folder for the weights inside the submission (the template's ``./model``).
        overwrite: Replace an existing submission folder of that name.

    Raises:
        FileNotFoundError: A run without ``best.pt``, with the places looked at.
        fh_utils.models.factory.RulesError: An ST1 ensemble, or model files over the 25 MB budget (the size named).
        ValueError: The client's zip rule would drop a file the function needs (each named); a task mismatch.
    """
    from fh_utils.workbook.submission import _parse_weights, resolve_run_dirs

    runs = resolve_run_dirs(",".join(map(str, run_dir)) if isinstance(run_dir, list) else run_dir, task)
    members, kind, src = _load(runs, _parse_weights(weights, len(runs)) if len(runs) > 1 else None)
    the_task = members_task(members)
    if task and get_task(task).name != the_task.name:
        raise ValueError(f"task={task!r} but {', '.join(r.name for r in runs)} predict {the_task.name!r}")
    check_ensemble_allowed(the_task, len(members))
    size_mb = check_budget(members, the_task)
    tta = check_tta(tta) if tta else _recorded_tta(runs[0]) if len(runs) == 1 else "none"
    stamp = datetime.now(timezone.utc)
    name = name or (runs[0].name if len(runs) == 1 else f"{the_task.name}-ensemble{len(runs)}-{stamp:%Y%m%d-%H%M%S}")
    folder = Path(out_dir) if str(out_dir) else submissions_dir() / name
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) or another name")
    planned = [NOTEBOOK_FILE, CODE_ARCHIVE, f"{model_dir}/{SPEC_FILE}"]
    dropped = [p for p in planned if not client_keeps(p)]
    if dropped:
        raise ValueError(f"the platform client's zip would leave out {dropped} (a folder path containing "
                         f"{' / '.join(CLIENT_SKIPPED_FOLDER_WORDS)}): choose another model_dir than {model_dir!r}")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model_path = _write_model(staging / model_dir, members, kind, src)
        file_mb = _weights_mb(staging / model_dir)
        budget = the_task.rules.size_budget_mb
        if file_mb > budget:
            raise RulesError(f"{the_task.name}: the model files come to {file_mb:.2f} MB, over the {budget:g} MB "
                             "budget; drop ensemble members or export to int8")  # fmt: skip
        spec = {
            "name": name, "model_name": model_name or name, "task": the_task.name, "metric": the_task.metric,
            "kind": kind, "model_file": model_path, "tta": tta,
            "members": [{"run": m.name, "weight": m.weight, "size_mb": round(m.size_mb, 4), "score": m.score}
                        for m in members],
            "size_mb": round(size_mb, 4), "file_mb": round(file_mb, 4), "budget_mb": budget,
            "validated_score": _validated_score(runs[0], tta) if len(runs) == 1 and kind == "run" else None,
            "source": [str(r) for r in runs], "created": stamp.isoformat(timespec="seconds"),
            "fh_utils_version": fh_utils.__version__,
        }  # fmt: skip
        write_json(staging / model_dir / SPEC_FILE, spec)
        build_code_archive(staging / CODE_ARCHIVE)
        write_text(staging / NOTEBOOK_FILE, json.dumps(task_notebook(spec, the_task, key, model_dir), indent=1) + "\n")
        kept, dropped = client_zip_listing(staging)
        if dropped:
            raise ValueError(f"the platform client's zip would leave out {dropped}: the function needs them")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
        dry_run_report(folder).unlink(missing_ok=True)  # it described the folder just replaced
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return PackagedSubmission(folder, spec, kept, the_task, training_data_roots(runs))


# --- the dry run --------------------------------------------------------------------------------------------------


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
_DRIVER = '''
import importlib.abc, importlib.util, json, os, runpy, sys
script, checkout, report, predictions = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], sys.argv[4]
blocked = set(sys.argv[5].split(","))
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p and os.path.realpath(p or ".") != checkout]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("fh_utils") is None, "the installed fh_utils is still importable"

import time
start = time.perf_counter()
import torch, timm, numpy, pandas, cv2, albumentations, PIL  # what the function imports, timed on their own
imports_s = time.perf_counter() - start
sys.argv = [script]
namespace = runpy.run_path(script, run_name="task")
sys.path.insert(0, os.path.abspath("fh_utils.zip"))  # as the notebook's own dry-run cell does
from fh_utils.inference.aif import dry_run
import fh_utils

result = dry_run(namespace["submit"], "./model")
result.pop("frame").to_csv(predictions, index=False)
result["imports_seconds"] = imports_s
result["fh_utils_file"] = fh_utils.__file__
result["modules"] = sorted({m.split(".")[0] for m in sys.modules})
lacking = sorted(blocked & set(result["modules"]))
assert not lacking, f"the submission imported {lacking}, which the scoring server does not have"
with open(report, "w") as f:
    json.dump(result, f)
'''


def upload_table(package: PackagedSubmission) -> pd.DataFrame:
    """One row per file of the upload (as the client's zip lists them): its path and size in MB."""
    return pd.DataFrame([{"file": f, "mb": round((package.folder / f).stat().st_size / 1e6, 4)} for f in package.files])


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

    def labels(self) -> tuple[Any, Any] | None:
        """``(y_true, y_pred)`` arrays ``(N, n_heads)`` when the dry run's CSV has labels, else None."""
        task = get_task(self.task)
        rows = pd.read_csv(Path(self.dataset) / task.csv_name("test"))
        if not all(c in rows for c in task.label_columns):
            return None
        return rows[task.label_columns].to_numpy(), self.predictions[[h.key for h in task.heads]].to_numpy()


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
        driver.write_text(_DRIVER, encoding="utf-8")
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


def dry_run_report(folder: str | Path) -> Path:
    """Where the dry run of a submission folder is recorded: beside it (the folder holds the upload only)."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.dry_run.json")


def _package_data_roots(folder: Path, spec: dict[str, Any]) -> dict[str, list[str]]:
    """The training data roots of a submission folder given by path.

    From the runs its ``submission.json`` names (``source``, the members' ``run``) where they still exist, else
    from its last dry-run report.
    """
    named = spec.get("source") or [m.get("run") for m in spec.get("members", [])]
    sources = [Path(s) for s in named if s and Path(s).is_dir()]
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
    from fh_utils.workbook.workflow import resolve_data_root

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
    path = folder / MODEL_DIR / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a submission folder written by package_submission")
    return read_json(path)


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
    on_error = "raise" if str(data_root) or len(trained) != 1 else _training_on_error(next(iter(trained.values())))
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]  # two data roots of one name never share a layout
    dataset = outputs_dir() / "aif_dataset" / f"{root.name}-{tag}-{split}{f'-{limit}' if limit else ''}" / "Dataset"
    layout_test_set(root, dataset, split, tasks=(spec["task"],), limit=limit, on_error=on_error)
    dry = dry_run_submission(folder, dataset)
    write_json(dry_run_report(folder), {"submission": str(folder), "data_root": str(root), "trained_on": trained,
                                        "dataset": str(dataset), "rows": dry.rows,
                                        "seconds": dry.seconds, "total_seconds": dry.total_seconds,
                                        "imports_seconds": dry.imports_seconds,
                                        "score": dry.score, "validated_score": spec.get("validated_score"),
                                        "fh_utils_file": dry.fh_utils_file})  # fmt: skip
    return dry
