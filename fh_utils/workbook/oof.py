"""Out-of-fold predictions of a fold sweep: one ``oof`` file per recipe and seed, and its cross-validated score.

``python -m fh_utils oof SWEEP`` (and notebook 06's out-of-fold section) call :func:`sweep_oof`: the sweep's runs
with ``split="fold:K/N"`` are grouped by recipe (the parameters that differ, as notebook 06 names them) and seed
(a seed draws its own fold assignment), each complete group's held-out probabilities are gathered
(:func:`fh_utils.scoring.oof.gather_folds`) and scored (:func:`fh_utils.scoring.oof.cross_validated`), and

- ``outputs/runs/<sweep>/oof/<recipe>__seed<S>.npz``: every row of train ∪ val once, its fold and each epoch's
  probabilities per class (:class:`~fh_utils.scoring.predictions.EpochPredictions`);
- ``outputs/runs/<sweep>/oof/oof_report.json``: per group, the cross-validated score with its 90 % interval at
  one epoch count shared by every fold, how that count was chosen, and the count a ``full`` fit of the recipe
  should train (``python -m fh_utils run notebooks/04_train_st2.ipynb ... -p split full -p epochs <it>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.io import read_json, write_json
from fh_utils.paths import runs_dir
from fh_utils.runs import CONFIG_FILE, EPOCH_PREDICTIONS_FILE
from fh_utils.scoring.estimates import EstimateSettings
from fh_utils.scoring.oof import FoldSetError, cross_validated, gather_folds
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import get_task
from fh_utils.workbook.compare import collect_runs

OOF_DIR, OOF_REPORT = "oof", "oof_report.json"
_FOLD = re.compile(r"^fold:(\d+)/(\d+)$")


class NoFoldRunsError(ValueError):
    """The sweep has no run trained with ``split="fold:K/N"`` (what it has is named)."""


@dataclass
class OofGroup:
    """One recipe and seed's fold set and what was made of it.

    Attributes:
        task: ``st1`` / ``st2``.
        recipe: Notebook 06's recipe label.
        seed: The seed (it drew the fold assignment).
        n_folds: N.
        runs: ``{k: run name}``.
        result: :func:`~fh_utils.scoring.oof.cross_validated`'s dict, or None when incomplete.
        problem: Why the group could not be scored (a fold missing, a row twice), else empty.
        file: The ``oof`` file written.
    """

    task: str
    recipe: str
    seed: int
    n_folds: int
    runs: dict[int, str]
    result: dict[str, Any] | None = None
    problem: str = ""
    file: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; run names only, no local paths."""
        return {"task": self.task, "recipe": self.recipe, "seed": self.seed, "n_folds": self.n_folds,
                "runs": {str(k): v for k, v in sorted(self.runs.items())}, "result": self.result,
                "problem": self.problem, "file": self.file}  # fmt: skip


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "default"


def fold_groups(frame: pd.DataFrame) -> dict[tuple, dict[int, Path]]:
    """``{(task, recipe, seed, N): {K: run folder}}`` of the runs whose split is ``fold:K/N``."""
    groups: dict[tuple, dict[int, Path]] = {}
    for row in frame.itertuples():
        match = _FOLD.match(str(row.split))
        if not match:
            continue
        k, n = int(match.group(1)), int(match.group(2))
        seed = int(getattr(row, "param_seed", 0) or 0)
        groups.setdefault((row.task, row.recipe, seed, n), {})[k] = Path(row.run_dir)
    return groups


def sweep_oof(sweep: str, root: str | Path | None = None, settings: EstimateSettings | None = None) -> list[OofGroup]:
    """Gather and score every fold set of a sweep; write the ``oof`` files and the report.

    Args:
        sweep: The sweep's folder name under the runs folder.
        root: The runs folder (default ``outputs/runs``).
        settings: Bootstrap replicates, interval level, seed.

    Raises:
        NoFoldRunsError: The sweep has no fold run.
    """
    root = Path(root) if root else runs_dir()
    frame = collect_runs(root, sweep=sweep)
    groups = fold_groups(frame)
    if not groups:
        splits = sorted(set(frame["split"].astype(str))) if len(frame) else []
        raise NoFoldRunsError(
            f"{root / sweep}: no run with split fold:K/N (runs found: {len(frame)}, splits: {splits or 'none'}); "
            "a fold sweep sets e.g. grid: {split: [fold:0/5, ..., fold:4/5]}"
        )
    out_dir = root / sweep / OOF_DIR
    results = []
    for (task_name, recipe, seed, n), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        names = {k: p.relative_to(root).as_posix() for k, p in members.items()}
        group = OofGroup(task_name, recipe, seed, n, names)
        try:
            stored = {k: EpochPredictions.load(p / EPOCH_PREDICTIONS_FILE) for k, p in members.items()
                      if (p / EPOCH_PREDICTIONS_FILE).exists()}  # fmt: skip
            lacking = sorted(set(members) - set(stored))
            if lacking:
                raise FoldSetError(f"fold(s) {lacking} stored no per-epoch predictions ({EPOCH_PREDICTIONS_FILE})")
            oof = gather_folds(stored, n, names)
        except FoldSetError as err:
            group.problem = str(err)
            results.append(group)
            continue
        config = read_json(next(iter(members.values())) / CONFIG_FILE)
        task = get_task(task_name, (config.get("data") or {}).get("data_root"))
        group.result = cross_validated(task, oof, settings)
        path = out_dir / f"{_slug(recipe)}__seed{seed}.npz"
        oof.save(path)
        group.file = path.relative_to(root).as_posix()
        results.append(group)
    write_json(out_dir / OOF_REPORT, {"sweep": sweep, "groups": [g.to_dict() for g in results]})
    return results


def oof_table(groups: list[OofGroup]) -> pd.DataFrame:
    """One row per fold set: recipe, seed, folds, the cross-validated scores and the full-fit epochs.

    The scores (each with its interval): of every row, and of the val CSV's rows alone.
    """
    rows = []
    for g in groups:
        r = g.result or {}
        score, val = r.get("score") or {}, r.get("val_rows") or {}
        rows.append({"task": g.task, "recipe": g.recipe, "seed": g.seed, "folds": g.n_folds,
                     "cv_score": score.get("score"), "low": score.get("low"), "high": score.get("high"),
                     "cv_val_rows": val.get("score"), "val_low": val.get("low"), "val_high": val.get("high"),
                     "full_fit_epochs": r.get("epochs"), "at_chosen (optimistic)": r.get("at_chosen"),
                     "rows": r.get("rows"), "problem": g.problem})  # fmt: skip
    return pd.DataFrame(rows)


def full_fit_epochs(source: str, root: str | Path | None = None) -> tuple[int, str]:
    """The epoch count a fold sweep's cross-validation chose, for a ``full`` fit of the recipe.

    Args:
        source: ``"SWEEP"`` (its one recipe) or ``"SWEEP|RECIPE"`` (a recipe label of its ``oof_report.json``, as
            ``python -m fh_utils oof SWEEP`` prints it). Several seeds of the recipe: the median of their counts.
        root: The runs folder (default ``outputs/runs``).

    Returns:
        The count and a line saying where it came from.

    Raises:
        FileNotFoundError: The sweep has no ``oof_report.json`` (run ``python -m fh_utils oof SWEEP``).
        ValueError: No scored fold set of the recipe, or several recipes and none named (each named).
    """
    sweep, _, recipe = source.partition("|")
    report_path = (Path(root) if root else runs_dir()) / sweep / OOF_DIR / OOF_REPORT
    if not report_path.is_file():
        raise FileNotFoundError(f"epochs_from={source!r}: {report_path} not found; run python -m fh_utils oof {sweep}")
    scored = [g for g in read_json(report_path).get("groups", []) if g.get("result")]
    recipes = sorted({g["recipe"] for g in scored})
    if not recipe and len(recipes) == 1:
        recipe = recipes[0]
    chosen = [g for g in scored if g["recipe"] == recipe]
    if not chosen:
        raise ValueError(f"epochs_from={source!r}: no scored fold set of recipe {recipe!r} in {report_path}; "
                         f"recipes: {recipes or 'none'} (name one as '{sweep}|<recipe>')")  # fmt: skip
    counts = sorted(int(g["result"]["epochs"]) for g in chosen)
    epochs = counts[(len(counts) - 1) // 2]
    seeds = ", ".join(str(g["seed"]) for g in chosen)
    return epochs, (f"epochs    {epochs}: the count the cross-validation of {sweep} chose for {recipe!r} "
                    f"(seed(s) {seeds}: {counts})")  # fmt: skip
