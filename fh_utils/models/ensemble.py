"""ST2 ensembles: several trained runs as one file, their probabilities averaged (optionally weighted).

An ensemble lives in its own folder ``outputs/runs/<name>/``: ``ensemble.pt`` (every member's weights,
``model_config``, crop settings and weight; loadable alone with ``torch.load(weights_only=True)``),
``manifest.json`` (the members: source run, score, size, weight) and ``config.json`` (the task). Its size is
the sum of the members' saved state dicts, checked against the task's budget. ST1 forbids ensembles: building
one is refused unless ``enforce_rules=False``.

Members may differ in input size and colour spaces; :func:`fh_utils.workbook.submission.predict_submission`
feeds each group of members that share an input its own crops (:meth:`Member.input_key`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fh_utils.data.config import pad_rgb
from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.models.factory import RulesError, load_model, model_from_config, state_dict_size_mb, task_of_model
from fh_utils.runs import (
    BEST_CKPT,
    CHECKPOINT_FILES,
    CONFIG_FILE,
    ENSEMBLE_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    checkpoint_rule_of,
    model_file,
    parse_weights,
    recorded_checkpoint_score,
    when_saved,
)  # fmt: skip
from fh_utils.tasks import Task

# The data settings that make a model's crops: they travel with it into prediction (runs, ensembles, int8, the package).
DATA_KEYS = ("crop_margin", "crop_prob", "resize", "pad_value")


@dataclass
class Member:
    """One model of a prediction: the network, how its crops are made, and its weight in the average.

    Attributes:
        model: The network (eval mode, CPU).
        data: Crop settings of its run (:data:`DATA_KEYS`: ``crop_margin``, ``crop_prob``, ``resize``,
            ``pad_value``; a key left out takes :class:`~fh_utils.data.config.DataConfig`'s default).
        weight: Relative weight of its probabilities.
        name: Source run folder (or file).
        size_mb: Its saved size, MB.
        score: Its recorded validation score, when known.
    """

    model: nn.Module
    data: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""
    size_mb: float = 0.0
    score: float | None = None

    def input_key(self) -> tuple:
        """Members with equal keys can share one batch of crops.

        ``(img_size, color_spaces, crop_margin, crops used, resize, pad colour)``; the pad colour is None for a
        stretch, which never reads it.
        """
        ic = self.model.input_config
        resize = str(self.data.get("resize", "stretch"))
        pad = pad_rgb(self.data.get("pad_value", 0)) if resize == "letterbox" else None
        return (int(ic["img_size"]), tuple(ic["color_spaces"]), float(self.data.get("crop_margin", 0.0)),
                float(self.data.get("crop_prob", 1.0)) > 0, resize, pad)  # fmt: skip


def data_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The :data:`DATA_KEYS` of a run's ``config.json`` ``"data"`` section, typed (a key it lacks stays out).

    Floats for the crop margin and probability, the resize mode as a string, the pad colour as an RGB tuple:
    settings read from JSON and live ones compare equal.
    """
    out: dict[str, Any] = {k: float(data[k]) for k in ("crop_margin", "crop_prob") if k in data}
    if "resize" in data:
        out["resize"] = str(data["resize"])
    if "pad_value" in data:
        out["pad_value"] = pad_rgb(data["pad_value"])
    return out


def _run_data(run_dir: Path) -> dict[str, Any]:
    config_path = run_dir / CONFIG_FILE
    data = read_json(config_path).get("data", {}) if config_path.exists() else {}
    return data_settings(data)


def _checkpoint_score(run: Path, rule: str | None) -> float | None:
    """The val score ``metrics.json`` records for the run's checkpoint of ``rule`` (best: the best epoch's)."""
    path = run / METRICS_FILE
    if not path.exists():
        return None
    return recorded_checkpoint_score(read_json(path), rule)


def member_from_run(run_dir: str | Path, weight: float = 1.0, checkpoint: str | Path | None = None) -> Member:
    """A :class:`Member` from a run folder's checkpoint (its crop settings from ``config.json``).

    The checkpoint of the rule the run was trained with (:func:`fh_utils.runs.model_file`), or ``checkpoint``: another
    weights file of the run (e.g. ``final.pt`` or ``checkpoints/epoch_012.pt``). ``score`` is that checkpoint's
    recorded val score when ``metrics.json`` has it.
    """
    run = Path(run_dir)
    path = Path(checkpoint) if checkpoint is not None else model_file(run) or run / BEST_CKPT
    model = load_model(path, map_location="cpu")
    return Member(model, _run_data(run), float(weight), str(run), state_dict_size_mb(model),
                  _checkpoint_score(run, checkpoint_rule_of(path)))  # fmt: skip


def check_ensemble_allowed(task: Task, n_members: int, enforce_rules: bool = True) -> None:
    """Refuse an ensemble of several models for a task whose rules forbid it (ST1), unless ``enforce_rules=False``.

    Raises:
        RulesError: With the rule named.
    """
    if n_members > 1 and enforce_rules and not task.rules.ensembles_allowed:
        raise RulesError(
            f"{task.name}: the competition rules forbid ensembles for this sub-task (one model per submission; "
            f"{n_members} runs given); submit one run, or pass enforce_rules=False to experiment outside the rules"
        )


def check_budget(members: list[Member], task: Task, size_budget: bool = True) -> float:
    """Summed saved size of the members, MB; over the task's budget raises (unless ``size_budget=False``)."""
    total = float(sum(m.size_mb for m in members))
    if size_budget and total > task.rules.size_budget_mb:
        sizes = ", ".join(f"{Path(m.name).name} {m.size_mb:.2f}" for m in members)
        raise RulesError(
            f"{task.name}: the ensemble's members sum to {total:.2f} MB ({sizes}), over the "
            f"{task.rules.size_budget_mb:g} MB budget; drop members or pass size_budget=False"
        )
    return total


def members_task(members: list[Member]) -> Task:
    """The one task of all members (they must agree, class names included)."""
    tasks = {json.dumps([m.model.model_config["task"], m.model.model_config.get("class_names")]) for m in members}
    if len(tasks) != 1:
        raise ValueError(f"ensemble members were trained for different tasks or classes: {sorted(tasks)}")
    return task_of_model(members[0].model)


def _rule_file(run: str | Path, rule: str) -> Path | None:
    """The run's checkpoint of ``rule`` (None: the run's own rule); a missing one is an error naming it."""
    if not rule:
        return None
    path = model_file(run, rule)
    if path is None:
        raise FileNotFoundError(f"{run} has no {rule!r} checkpoint ({CHECKPOINT_FILES[rule]}): {when_saved(rule)}")
    return path


def build_ensemble(
    run_dirs: list[str | Path],
    weights: list[float] | None = None,
    enforce_rules: bool = True,
    size_budget: bool = True,
    rule: str = "",
) -> list[Member]:
    """Load the members of an ensemble from run folders, check the rules and the budget.

    Args:
        run_dirs: Run folders (each with its rule's checkpoint).
        weights: One weight per run (default: equal); normalised when averaging.
        enforce_rules: Refuse an ensemble for a task that forbids it (ST1).
        size_budget: Refuse members whose summed size exceeds the task's budget.
        rule: The checkpoint rule every member is taken by (``""``: each run's own, see
            :func:`fh_utils.runs.model_file`).

    Raises:
        RulesError: ST1 ensemble with ``enforce_rules``, or over the size budget.
    """
    weights = parse_weights(weights, len(run_dirs)) or [1.0] * len(run_dirs)  # not one per run: an error
    if not run_dirs:
        raise ValueError("an ensemble needs at least one run folder")
    members = [member_from_run(r, w, checkpoint=_rule_file(r, rule)) for r, w in zip(run_dirs, weights)]
    task = members_task(members)
    check_ensemble_allowed(task, len(members), enforce_rules)
    check_budget(members, task, size_budget)
    return members


def save_ensemble(members: list[Member], folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``ensemble.pt``, ``manifest.json`` and ``config.json`` into ``folder``; return the file.

    ``extra`` goes into the manifest (e.g. the ensemble's validation score).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = members_task(members)
    state = {
        "kind": "ensemble",
        "task": task.name,
        "members": [{"model": m.model.state_dict(), "model_config": m.model.model_config, "data": m.data,
                     "weight": m.weight, "name": m.name, "size_mb": m.size_mb, "score": m.score}
                    for m in members],
    }  # fmt: skip
    path = folder / ENSEMBLE_FILE
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    manifest = {
        "task": task.name,
        "members": [{"run": m.name, "weight": m.weight, "size_mb": round(m.size_mb, 4), "score": m.score,
                     "backbone": m.model.model_config.get("backbone"), "img_size": m.model.input_config["img_size"],
                     "color_spaces": m.model.input_config["color_spaces"], **m.data} for m in members],
        "size_mb": round(sum(m.size_mb for m in members), 4),
        "file_mb": round(path.stat().st_size / 1e6, 4),
        "budget_mb": task.rules.size_budget_mb,
        **(extra or {}),
    }  # fmt: skip
    write_json(folder / MANIFEST_FILE, manifest)
    write_json(folder / CONFIG_FILE, {"run": {"kind": "ensemble", "members": len(members)},
                                        "task": {"name": task.name}})  # fmt: skip
    return path


def load_ensemble(path: str | Path) -> list[Member]:
    """The members of a saved ensemble (``ensemble.pt`` or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / ENSEMBLE_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    members = []
    for m in state["members"]:
        model = model_from_config(m["model_config"])
        model.load_state_dict(m["model"])
        members.append(Member(model.eval(), dict(m.get("data", {})), float(m.get("weight", 1.0)), m.get("name", ""),
                              float(m.get("size_mb", 0.0)), m.get("score")))  # fmt: skip
    return members


def average_probabilities(probs: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    """Weighted mean of per-member ``{column: (N, C) probabilities}`` (weights normalised to sum 1)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"ensemble weights must sum to more than 0, got {weights}")
    return {column: sum(w / total * p[column] for w, p in zip(weights, probs)) for column in probs[0]}
