"""One road from the names a user types to the members that predict, checked once.

:func:`load_for_prediction` resolves run names (a folder, a name under ``outputs/runs``, several comma-separated,
a JSON list such as notebook 06's ``top_k.json``), loads each run's checkpoint by its rule (or the rule asked
for), a saved ensemble or an int8 export, and checks the task, the competition's rules (ST1: one model) and
the size budget. Notebook 05 (:mod:`fh_utils.workbook.submission`), the packaging
(:mod:`fh_utils.leaderboard.package`) and the final evaluation of notebooks 03/04
(:func:`fh_utils.workbook.evaluation.evaluate_checkpoint`) all load through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fh_utils.inference.predictor import load_members
from fh_utils.io import read_json
from fh_utils.models.ensemble import Member, build_ensemble, check_budget, check_ensemble_allowed, members_task
from fh_utils.runs import (
    CHECKPOINT_FILES,
    ENSEMBLE_FILE,
    INT8_FILE,
    checkpoint_rule_of,
    model_file,
    parse_weights,
    resolve_run_dirs,
    run_checkpoint_rule,
    run_list_file,
    weights_from_json,
    when_saved,
)  # fmt: skip
from fh_utils.tasks import Task, get_task

KINDS = ("run", "ensemble", "int8", "runs")


@dataclass
class LoadedModels:
    """What :func:`load_for_prediction` found, loaded and checked.

    Attributes:
        members: The models that predict (one, a saved ensemble's, or one per run).
        task: Their task.
        sources: The folders named (one, or one per run of an ensemble to build).
        kind: ``"run"`` (a run's checkpoint), ``"ensemble"`` (a saved ``ensemble.pt``), ``"int8"`` (an export) or
            ``"runs"`` (several runs: an ensemble not yet saved).
        model_path: The one file loaded (None for several runs).
        size_mb: The members' summed saved size.
        rule: The checkpoint rule of a run's file (``"best"``, ``"last"``, ``"avg"``, ``"crt"``), else ``""``.
        run_list: The JSON run list named (``top_k.json``, ``ensemble_choice.json``: its estimate travels to the
            package), else empty.
    """

    members: list[Member]
    task: Task
    sources: list[Path]
    kind: str
    model_path: Path | None
    size_mb: float
    rule: str = ""
    run_list: dict = field(default_factory=dict)


def _kind(path: Path) -> str:
    return {ENSEMBLE_FILE: "ensemble", INT8_FILE: "int8"}.get(path.name, "run")


def load_for_prediction(
    run_dir: str | Path | list[str | Path] = "",
    task: str = "",
    weights: str | list[float] | None = "",
    checkpoint: str = "",
    enforce_rules: bool = True,
    size_budget: bool = True,
) -> LoadedModels:
    """Resolve, load and check what a submission predicts with.

    Args:
        run_dir: A run folder, a saved ensemble or int8 export folder, several runs (comma-separated or a list),
            a JSON file listing runs, or ``""`` (the newest run of ``task``).
        task: ``"st1"`` / ``"st2"``; empty: the models' own. A mismatch is an error.
        weights: One weight per run of an ensemble (``"1,2"`` or a list); empty: a run list's own (an
            ``ensemble_choice.json`` records them), else equal.
        checkpoint: The checkpoint rule to take from each run (``"best"``, ``"last"``, ``"avg"``, ``"crt"``);
            empty: the rule each run was trained with.
        enforce_rules: Refuse an ensemble for a task whose rules forbid it (ST1).
        size_budget: Refuse members over the task's size budget.

    Raises:
        FileNotFoundError: A name with no model file (the places looked at are named).
        fh_utils.models.factory.RulesError: An ST1 ensemble, or members over the budget.
        ValueError: A task mismatch, or not one weight per run.
    """
    names = ",".join(map(str, run_dir)) if isinstance(run_dir, (list, tuple)) else run_dir
    runs = resolve_run_dirs(names, task, checkpoint)
    listed = run_list_file(names)
    if weights in (None, "", []) and listed is not None:
        weights = weights_from_json(listed)  # an ensemble choice carries its weights
    member_weights = parse_weights(weights, len(runs))  # not one per run: an error
    if len(runs) > 1:
        members = build_ensemble(runs, member_weights, enforce_rules, size_budget, checkpoint)
        the_task, kind, path = members_task(members), "runs", None
    else:
        path = model_file(runs[0], checkpoint)
        if path is None:  # the newest run ("" names it) may still be training: no file of its rule yet
            rule = checkpoint or run_checkpoint_rule(runs[0])
            raise FileNotFoundError(f"{runs[0]} has no {rule!r} checkpoint ({CHECKPOINT_FILES[rule]}) yet: "
                                    f"{when_saved(rule)}; name another run or pass checkpoint='best'")  # fmt: skip
        members = load_members(path)
        the_task, kind = members_task(members), _kind(path)
        check_ensemble_allowed(the_task, len(members), enforce_rules)
    if task and get_task(task).name != the_task.name:
        raise ValueError(f"task={task!r} but {', '.join(r.name for r in runs)} predict {the_task.name!r}")
    size = check_budget(members, the_task, size_budget) if kind != "runs" else sum(m.size_mb for m in members)
    rule = (checkpoint_rule_of(path) or "") if kind == "run" else checkpoint if kind == "runs" else ""
    return LoadedModels(members, the_task, runs, kind, path, float(size), rule,
                        read_json(listed) if listed is not None else {})  # fmt: skip
