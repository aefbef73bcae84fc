"""From runs to the folder the FASHION-HOW platform scores (default ``outputs/submissions/<name>/``).

The platform never reads ``submission.csv``: its client (``aifactory.score``) zips the folder of the team's
``task.ipynb``, the server runs that notebook's function on its own CPU, offline, against the hidden test set,
and scores the DataFrame it returns. :func:`package_submission` writes one such folder per submission::

    task.ipynb          the 2024 template's shape (fh_utils.leaderboard.template)
    fh_utils.zip        the modules the prediction imports (fh_utils.leaderboard.archive), imported from the
                        archive inside the function
    model/
        best.pt | ensemble.pt | model_int8.pt   the weights (every member of an ensemble, with its weight)
        config.json     crop settings of a single run's best.pt (what its validation used)
        manifest.json   an ensemble's members
        submission.json task, model file, TTA mode, members, sizes, the validated score

The code ships as a zip archive because the client's upload rule (:mod:`fh_utils.leaderboard.client`) drops
every file whose folder path contains ``train``: ``fh_utils/training/`` copied as a folder would vanish from the
upload without a word. The prediction runs :class:`fh_utils.inference.predictor.Predictor`, the object notebook
05 and the final evaluation of notebooks 03/04 use, so the crops and the TTA are those of validation.

Checked before the folder appears (each a clear error): a model file in every run, ST1 one model, the
members' size against the 25 MB budget (state dicts first, then the files written), and the client's zip rule
keeping every file (listed as the client lists them). :mod:`fh_utils.leaderboard.dry_run` then runs the
notebook's function in a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import fh_utils
from fh_utils.inference.aif import CODE_ARCHIVE
from fh_utils.inference.loading import load_for_prediction
from fh_utils.io import read_json, write_json, write_text
from fh_utils.leaderboard.archive import build_code_archive
from fh_utils.leaderboard.client import CLIENT_SKIPPED_FOLDER_WORDS, client_keeps, client_zip_listing
from fh_utils.leaderboard.template import MODEL_DIR, NOTEBOOK_FILE, task_notebook
from fh_utils.ledger import LedgerRow, append_submission
from fh_utils.models.ensemble import Member, members_task, save_ensemble
from fh_utils.models.factory import RulesError
from fh_utils.paths import resolve_data_root, submissions_dir
from fh_utils.runs import (
    CONFIG_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    SUBMISSION_SPEC_FILE,
    recorded_checkpoint_score,
    run_label,
)  # fmt: skip
from fh_utils.scoring.report import ESTIMATES_KEY, run_estimates
from fh_utils.tasks import Task
from fh_utils.training.tta import check_tta


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


def _validated_score(run: Path, tta: str, rule: str) -> float | None:
    """What the run's validation scored for its checkpoint of ``rule`` with ``tta`` (``metrics.json``), else None.

    ``tta_score`` is the final evaluation's (notebooks 03/04 re-evaluate the checkpoint of the run's own rule).
    """
    path = run / METRICS_FILE
    if not path.is_file():
        return None
    metrics = read_json(path)
    saved = metrics.get("checkpoint") or {"rule": "best", "score": metrics.get("score")}
    if rule == "crt" or saved.get("rule", "best") != rule:
        return recorded_checkpoint_score(metrics, rule) if tta == "none" else None
    if tta == "none":
        return saved.get("score")
    return metrics.get("tta_score") if metrics.get("tta") == tta else None


def _recorded_tta(run: Path) -> str:
    path = run / METRICS_FILE
    return check_tta(read_json(path).get("tta", "none")) if path.is_file() else "none"


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
    roots: dict[str, list[str]] = {}
    for source in map(Path, sources):
        for run in _trained_runs(source):
            root = str(resolve_data_root(read_json(run / CONFIG_FILE)["data"]["data_root"]))
            roots.setdefault(root, []).append(str(run))
    return roots


def training_on_error(runs: list[str]) -> str:
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
    checkpoint: str = "",
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
        checkpoint: The checkpoint rule taken from each run (``"best"``, ``"last"``, ``"avg"``, ``"crt"``); empty:
            the rule each run was trained with. Loading and every check:
            :func:`fh_utils.inference.loading.load_for_prediction`.

    Raises:
        FileNotFoundError: A run without its rule's checkpoint, with the places looked at.
        fh_utils.models.factory.RulesError: An ST1 ensemble, or model files over the 25 MB budget (the size named).
        ValueError: The client's zip rule would drop a file the function needs (each named); a task mismatch.
    """
    loaded = load_for_prediction(run_dir, task, weights, checkpoint)
    members, the_task, runs, size_mb = loaded.members, loaded.task, loaded.sources, loaded.size_mb
    kind = "ensemble" if loaded.kind == "runs" else loaded.kind
    tta = check_tta(tta) if tta else _recorded_tta(runs[0]) if len(runs) == 1 else "none"
    stamp = datetime.now(timezone.utc)
    name = name or (runs[0].name if len(runs) == 1 else f"{the_task.name}-ensemble{len(runs)}-{stamp:%Y%m%d-%H%M%S}")
    folder = Path(out_dir) if str(out_dir) else submissions_dir() / name
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) or another name")
    planned = [NOTEBOOK_FILE, CODE_ARCHIVE, f"{model_dir}/{SUBMISSION_SPEC_FILE}"]
    dropped = [p for p in planned if not client_keeps(p)]
    if dropped:
        words = " / ".join(CLIENT_SKIPPED_FOLDER_WORDS)
        raise ValueError(f"the platform client's zip would leave out {dropped} (a folder path containing {words}): "
                         f"choose another model_dir than {model_dir!r}")  # fmt: skip

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model_path = _write_model(staging / model_dir, members, kind, loaded.model_path)
        file_mb = _weights_mb(staging / model_dir)
        budget = the_task.rules.size_budget_mb
        if file_mb > budget:
            raise RulesError(f"{the_task.name}: the model files come to {file_mb:.2f} MB, over the {budget:g} MB "
                             "budget; drop ensemble members or export to int8")  # fmt: skip
        spec = {
            "name": name, "model_name": model_name or name, "task": the_task.name, "metric": the_task.metric,
            "kind": kind, "model_file": model_path, "tta": tta,
            "members": [{"run": run_label(m.name), "weight": m.weight, "size_mb": round(m.size_mb, 4),
                         "score": m.score} for m in members],
            "size_mb": round(size_mb, 4), "file_mb": round(file_mb, 4), "budget_mb": budget,
            "checkpoint": loaded.rule,
            "validated_score": _validated_score(runs[0], tta, loaded.rule) if kind == "run" else None,
            **_honest_numbers(runs, kind, loaded.rule, the_task, loaded.run_list),
            "source": [run_label(r) for r in runs], "created": stamp.isoformat(timespec="seconds"),
            "fh_utils_version": fh_utils.__version__,
        }  # fmt: skip
        write_json(staging / model_dir / SUBMISSION_SPEC_FILE, spec)
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
    _record_in_ledger(spec)
    return PackagedSubmission(folder, spec, kept, the_task, training_data_roots(runs))


def _honest_numbers(runs: list[Path], kind: str, rule: str, task: Task, run_list: dict) -> dict[str, Any]:
    """The honest numbers ``submission.json`` records.

    ``estimate``: the honest estimate of one run's checkpoint of ``rule`` with its interval (its ``metrics.json``'s
    when it stored one for that rule, else computed now from its stored predictions); ``best_epoch_score``: its
    best val epoch's score (optimistic); ``validation``: what its scores were measured on. An ensemble chosen by
    :func:`fh_utils.workbook.ensemble_choice.choose_ensemble` (its ``ensemble_choice.json`` packaged, one member or
    several): the choice's estimate and its val score (optimistic, chosen there). None for other ensembles and for
    exports, which record none.
    """
    if run_list.get("estimate"):
        return {"estimate": run_list["estimate"], "best_epoch_score": run_list.get("val_score"), "validation": "val"}
    metrics = read_json(runs[0] / METRICS_FILE) if len(runs) == 1 and (runs[0] / METRICS_FILE).is_file() else {}
    estimate = None
    if kind == "run":
        estimate = (metrics.get(ESTIMATES_KEY) or {}).get("estimate")
        if estimate is None or estimate.get("rule", "best") != rule:  # another rule's, or none stored yet
            estimate = (run_estimates(runs[0], task, rule) or {}).get("estimate")
    return {"estimate": estimate, "best_epoch_score": metrics.get("score") if kind == "run" else None,
            "validation": metrics.get("validation", "val") if metrics else None}  # fmt: skip


def _record_in_ledger(spec: dict[str, Any]) -> None:
    estimate = spec.get("estimate") or {}
    append_submission(LedgerRow(
        name=spec["name"], task=spec["task"], members=";".join(m["run"] for m in spec["members"]),
        weights=";".join(f"{m['weight']:g}" for m in spec["members"]),
        rule=spec.get("checkpoint") or estimate.get("rule", ""),
        estimate=estimate.get("score"), estimate_low=estimate.get("low"), estimate_high=estimate.get("high"),
        best_epoch_score=spec.get("best_epoch_score"), validation=spec.get("validation") or "",
    ))  # fmt: skip


def upload_table(package: PackagedSubmission) -> pd.DataFrame:
    """One row per file of the upload (as the client's zip lists them): its path and size in MB."""
    return pd.DataFrame([{"file": f, "mb": round((package.folder / f).stat().st_size / 1e6, 4)} for f in package.files])


def dry_run_report(folder: str | Path) -> Path:
    """Where the dry run of a submission folder is recorded: beside it (the folder holds the upload only)."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.dry_run.json")
