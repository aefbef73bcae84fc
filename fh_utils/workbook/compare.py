"""Notebook 06: every run folder (plain runs and sweep trials) in one table, its figures, the winners.

:func:`collect_runs` reads each ``outputs/runs/**/metrics.json`` with its ``config.json`` and ``history.csv``;
:func:`differing_parameters` finds the parameters that vary between the runs shown; the figures compare recipes
(runs that differ only in ``seed`` / ``split`` form one recipe), curves and swept parameters.

``top_k.json`` (written by :func:`write_top_k`, read by the ensembling step) is::

    {"task": "st2", "metric": "acsa", "k": 3, "created": "2026-...",
     "runs": [{"rank": 1, "run": "st2-seeds/t0003", "run_dir": "/abs/outputs/runs/st2-seeds/t0003",
               "score": 0.61, "estimate": 0.55, "estimate_low": 0.49, "estimate_high": 0.61,
               "split": "val", "best_epoch": 11}, ...], "rank_by": "estimate"}

ranked by the honest estimate (:mod:`fh_utils.scoring.report`: what the saved checkpoint will score on unseen
photos, never chosen on the rows it is scored on), best first; a run written before estimates existed is ranked by
its best-epoch ``score``, which is optimistic (``rank_by="score"`` ranks every run that way); runs without a
validation score (``split="full"``) are left out, and fold runs are scored on their own held-out fold, not on the
official val split (``split`` says which). Each run has a ``state`` (running, finished, failed, pruned, killed:
:func:`fh_utils.runs.read_run_state`, or the trial's state where the sweep's study is at hand); ``top_k.json`` takes
finished runs only unless told otherwise (``states``), so a half-trained run is never handed to an ensemble.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fh_utils.io import read_json, write_json
from fh_utils.paths import runs_dir
from fh_utils.runs import BEST_CKPT, CONFIG_FILE, HISTORY_FILE, METRICS_FILE, RUNS_CSV, TOP_K_FILE, read_run_state
from fh_utils.scoring.report import estimate_summary
from fh_utils.tasks import get_task

# Settings that say where or how fast a run ran, not what it trained: never "parameters that differ".
IGNORED = {"run_name", "resume", "num_workers", "threads", "device", "cache", "cache_dir", "nobg_root",
           "eval_batch_size", "progress", "on_error", "channels_last", "compile", "amp", "class_names"}  # fmt: skip
GROUPING = ("seed", "split")  # runs that differ only in these are repeats of one recipe
ESTIMATE_COLUMNS = ["estimate", "estimate_low", "estimate_high", "last_epoch_score", "last3_score"]
BASE_COLUMNS = ["run", "task", "sweep", "recipe", "state", "estimate", "estimate_low", "estimate_high", "score",
                "last_epoch_score", "last3_score", "baseline_score", "best_epoch", "epochs", "wall_s", "size_mb",
                "split", "validation", "run_dir"]  # fmt: skip
RANK_BY = ("estimate", "score")


def _flat_parameters(config: dict) -> dict[str, Any]:
    """Notebook-level parameters of a run's ``config.json`` (``run``, ``data``, ``train``, ``model`` sections)."""
    out: dict[str, Any] = {}
    for section in ("run", "data", "train", "model"):
        for key, value in (config.get(section) or {}).items():
            if key in IGNORED or key in out or key in BASE_COLUMNS:  # task, split: already base columns
                continue
            out[key] = json.dumps(value) if isinstance(value, (list, dict, tuple)) else value
    return out


def _history_facts(run_dir: Path) -> tuple[int, float | None]:
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return 0, None
    history = pd.read_csv(path)
    wall = float(history["seconds"].sum()) if "seconds" in history else None
    return len(history), wall


def collect_runs(root: str | Path | None = None, task: str = "", sweep: str = "") -> pd.DataFrame:
    """One row per run folder holding ``metrics.json`` (sweep trials included), newest layout first.

    Columns: :data:`BASE_COLUMNS` (``sweep`` is the parent folder of a sweep trial, ``""`` for a plain run;
    ``wall_s`` the training time summed over epochs; ``size_mb`` the size of ``best.pt``), then one column per
    notebook parameter (``param_<name>``).

    Args:
        root: Runs folder (default ``outputs/runs``).
        task: Keep one task (``"st1"`` / ``"st2"``); empty keeps all.
        sweep: Keep one sweep's trials; empty keeps all runs.
    """
    root = Path(root) if root else runs_dir()
    rows = []
    for metrics_path in sorted(root.glob(f"**/{METRICS_FILE}")):
        run_dir = metrics_path.parent
        rel = run_dir.relative_to(root)
        metrics = read_json(metrics_path)
        config = read_json(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).exists() else {}
        epochs, wall = _history_facts(run_dir)
        best = run_dir / BEST_CKPT
        params = _flat_parameters(config)
        rows.append({
            "run": rel.as_posix(), "task": metrics.get("task"), "sweep": rel.parts[0] if len(rel.parts) > 1 else "",
            "state": read_run_state(run_dir)["state"],
            "score": metrics.get("score"), **estimate_summary(metrics), "baseline_score": metrics.get("baseline_score"),
            "best_epoch": metrics.get("epoch"), "epochs": epochs, "wall_s": wall,
            "size_mb": best.stat().st_size / 1e6 if best.exists() else None,
            "split": (config.get("data") or {}).get("split", "val"), "validation": metrics.get("validation", "val"),
            "run_dir": str(run_dir), **{f"param_{k}": v for k, v in params.items()},
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    if task:
        frame = frame[frame["task"] == task]
    if sweep:
        frame = frame[frame["sweep"] == sweep]
    frame = frame.reset_index(drop=True)
    frame["state"] = _with_trial_states(frame)
    for column in ["score", *ESTIMATE_COLUMNS]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame.insert(3, "recipe", recipe_labels(frame))
    return frame


def _with_trial_states(frame: pd.DataFrame) -> list[str]:
    # A sweep trial's state comes from its study when the journal is here (outputs/sweeps/<sweep>/).
    sweeps = sorted(s for s in frame["sweep"].unique() if s)
    if not sweeps:
        return list(frame["state"])
    from fh_utils.sweeps.dashboard import combined_state, trial_states

    studies = {name: trial_states(name) for name in sweeps}
    return [combined_state(r.state, studies.get(r.sweep, {}).get(r.run)) for r in frame.itertuples()]


def differing_parameters(frame: pd.DataFrame) -> list[str]:
    """The parameter names whose values differ between the rows of ``frame`` (without the ``param_`` prefix)."""
    out = []
    for column in frame.columns:
        if column.startswith("param_") and frame[column].astype(str).nunique(dropna=False) > 1:
            out.append(column[len("param_") :])
    return out


def recipe_labels(frame: pd.DataFrame) -> pd.Series:
    """A recipe name per row: its differing parameters other than ``seed`` / ``split`` as ``k=v`` (or "default")."""
    names = [n for n in differing_parameters(frame) if n not in GROUPING]
    if not names:
        return pd.Series(["default"] * len(frame), index=frame.index, dtype=object)
    return frame.apply(lambda row: " ".join(f"{n}={row[f'param_{n}']}" for n in names), axis=1)


def ranking_score(frame: pd.DataFrame, rank_by: str = "estimate") -> pd.Series:
    """The number runs are ranked by.

    The honest estimate (the best-epoch score where a run has none), or the best-epoch ``score`` for every run
    (``rank_by="score"``).
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by {rank_by!r}: expected one of {', '.join(RANK_BY)}")
    if rank_by == "score" or "estimate" not in frame:
        return frame["score"]
    return frame["estimate"].fillna(frame["score"])


def comparison_table(frame: pd.DataFrame, rank_by: str = "estimate") -> pd.DataFrame:
    """The table notebook 06 shows and saves: base columns, then the parameters that differ, best first.

    Ranked by :func:`ranking_score` (the honest estimate by default).
    """
    params = [f"param_{n}" for n in differing_parameters(frame)]
    columns = [c for c in BASE_COLUMNS if c in frame] + params
    table = frame[columns].rename(columns={p: p[len("param_") :] for p in params})
    table = table.assign(_rank=ranking_score(frame, rank_by).to_numpy())
    table = table.sort_values(["task", "_rank"], ascending=[True, False], na_position="last")
    return table.drop(columns="_rank").reset_index(drop=True)


def recipe_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task and recipe: runs, mean, std, min, max of the score and the best run."""
    scored = frame.dropna(subset=["score"])
    if scored.empty:
        return pd.DataFrame(columns=["task", "recipe", "runs", "mean", "std", "min", "max", "best_run"])
    rows = []
    for (task, recipe), group in scored.groupby(["task", "recipe"], sort=False):
        best = group.loc[group["score"].idxmax()]
        rows.append({"task": task, "recipe": recipe, "runs": len(group), "mean": group["score"].mean(),
                     "std": group["score"].std(ddof=1) if len(group) > 1 else 0.0, "min": group["score"].min(),
                     "max": group["score"].max(), "best_run": best["run"]})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["task", "mean"], ascending=[True, False]).reset_index(drop=True)


def best_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The best-scoring run of each task (runs without a score are skipped)."""
    scored = frame.dropna(subset=["score"])
    if scored.empty:
        return scored
    return scored.loc[scored.groupby("task")["score"].idxmax()].reset_index(drop=True)


def top_k_runs(frame: pd.DataFrame, k: int, task: str = "st2", states: tuple[str, ...] | None = ("finished",),
               rank_by: str = "estimate") -> pd.DataFrame:  # fmt: skip
    """The ``k`` best runs of ``task`` (the candidates of an ensemble) by :func:`ranking_score`, best first.

    Args:
        frame: From :func:`collect_runs`.
        k: How many.
        task: Task name.
        states: Run states to take (default finished runs only); None takes every run.
        rank_by: ``"estimate"`` (the honest estimate; default) or ``"score"`` (the optimistic best epoch).
    """
    scored = frame[(frame["task"] == task)].dropna(subset=["score"])
    if states is not None and "state" in scored:
        scored = scored[scored["state"].isin(states)]
    scored = scored.assign(_rank=ranking_score(scored, rank_by).to_numpy())
    return scored.sort_values("_rank", ascending=False).drop(columns="_rank").head(k).reset_index(drop=True)


def write_top_k(run_dir: str | Path, frame: pd.DataFrame, k: int, task: str = "st2",
                states: tuple[str, ...] | None = ("finished",), rank_by: str = "estimate") -> Path:  # fmt: skip
    """Write ``top_k.json`` (format in the module docstring) into ``run_dir``; returns its path.

    ``states`` as in :func:`top_k_runs`: finished runs only unless told otherwise (each entry records its state).
    """
    top = top_k_runs(frame, k, task, states, rank_by)
    metric = get_task(task).metric

    def number(value: Any) -> float | None:
        return None if value is None or pd.isna(value) else float(value)

    runs = [{"rank": i + 1, "run": r["run"], "run_dir": r["run_dir"], "score": float(r["score"]),
             **{c: number(r.get(c)) for c in ("estimate", "estimate_low", "estimate_high")}, "split": r["split"],
             "best_epoch": None if pd.isna(r["best_epoch"]) else int(r["best_epoch"]), "state": r.get("state")}
            for i, r in top.iterrows()]  # fmt: skip
    path = Path(run_dir) / TOP_K_FILE
    created = datetime.now().isoformat(timespec="seconds")
    write_json(path, {"task": task, "metric": metric, "k": int(k), "created": created, "runs": runs,
                      "rank_by": rank_by})  # fmt: skip
    return path


def write_runs_csv(run_dir: str | Path, table: pd.DataFrame) -> Path:
    """Write the comparison table as ``runs.csv`` into ``run_dir`` (atomically); returns its path."""
    from fh_utils.io import atomic_write

    path = Path(run_dir) / RUNS_CSV
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return path


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def score_by_recipe(frame: pd.DataFrame) -> Figure:
    """Per task, each recipe's runs as dots (the seed / fold spread) with their mean as a bar."""
    scored = frame.dropna(subset=["score"])
    tasks = sorted(scored["task"].unique()) or ["none"]
    heights = [max(2.0, 0.45 * scored[scored["task"] == t]["recipe"].nunique() + 1.2) for t in tasks]
    fig = _figure(10, sum(heights))
    axes = np.atleast_1d(fig.subplots(len(tasks), 1, height_ratios=heights))
    for ax, task in zip(axes, tasks):
        sub = scored[scored["task"] == task]
        order = sub.groupby("recipe")["score"].mean().sort_values().index.tolist()
        for i, recipe in enumerate(order):
            values = sub[sub["recipe"] == recipe]["score"].to_numpy()
            ax.barh(i, values.mean(), color="#4C72B0", alpha=0.35)
            ax.plot(values, np.full(len(values), i), "o", color="#4C72B0")
            spread = f"±{values.std(ddof=1):.3f}" if len(values) > 1 else ""
            ax.text(values.max(), i, f"  {values.mean():.3f}{spread} (n={len(values)})", va="center", fontsize=8)
        ax.set_yticks(range(len(order)), [r[:70] for r in order], fontsize=8)
        ax.set_xlabel("score")
        ax.set_title(f"{str(task).upper()}: score per recipe (dots: seeds / folds, bar: mean)")
        ax.grid(axis="x", alpha=0.3)
    return fig


def top_curves(frame: pd.DataFrame, n: int = 5) -> Figure:
    """Validation score per epoch of each task's ``n`` best runs, overlaid."""
    scored = frame.dropna(subset=["score"])
    tasks = sorted(scored["task"].unique()) or ["none"]
    fig = _figure(6 * len(tasks), 4)
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    for ax, task in zip(axes, tasks):
        for _, row in top_k_runs(scored, n, task, states=None).iterrows():
            path = Path(row["run_dir"]) / HISTORY_FILE
            history = pd.read_csv(path) if path.exists() else pd.DataFrame()
            state = "" if row.get("state", "finished") == "finished" else f", {row['state']}"
            if "val_score" in history:
                ax.plot(history["epoch"], history["val_score"], "o-", ms=3,
                        label=f"{row['run']} ({row['score']:.3f}{state})")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel("val score")
        ax.set_title(f"{str(task).upper()}: top {n} runs")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def score_vs_parameters(frame: pd.DataFrame, names: list[str] | None = None) -> Figure:
    """Score against each parameter that differs (numbers on a numeric axis, anything else as categories)."""
    scored = frame.dropna(subset=["score"])
    names = names if names is not None else differing_parameters(scored)
    names = names or ["seed"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4.5 * cols, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        column = f"param_{name}"
        if column not in scored:
            ax.set_visible(False)
            continue
        # Numeric or categorical for the whole column: one axis cannot take numbers for one task, text for another.
        values = pd.to_numeric(scored[column], errors="coerce")
        values = scored[column].map(str) if values.isna().any() else values  # map: astype(str) keeps NaN
        for task, sub in scored.groupby("task"):
            ax.plot(values[sub.index], sub["score"], "o", alpha=0.7, label=str(task).upper())
        ax.set_xlabel(name)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        if scored["task"].nunique() > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Score against each parameter that differs")
    return fig


def sweep_importances(sweeps: list[str]) -> dict[str, dict[str, float]]:
    """Optuna's parameter importances of each sweep whose study has enough finished trials ({} otherwise)."""
    out = {}
    for name in sweeps:
        try:
            import optuna

            from fh_utils.sweeps.study import open_sweep

            study = open_sweep(name)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) >= 3 and len({json.dumps(t.params, sort_keys=True, default=str) for t in done}) > 1:
                out[name] = dict(optuna.importance.get_param_importances(study))
        except Exception:  # noqa: BLE001, S112  (no study under outputs/sweeps, one parameter only, ...)
            continue
    return out


def importance_figure(importances: dict[str, dict[str, float]]) -> Figure:
    """One horizontal bar chart of parameter importances per sweep."""
    fig = _figure(5 * max(1, len(importances)), 3)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(importances))))
    for ax, (name, values) in zip(axes, importances.items()):
        ax.barh(list(values), list(values.values()), color="#8172B3")
        ax.set_title(f"{name}: parameter importance (Optuna)", fontsize=9)
    return fig


def estimate_vs_leaderboard(ledger: pd.DataFrame) -> Figure | None:
    """The submissions' honest estimates (with their intervals) and best-epoch scores against the leaderboard.

    Points on the diagonal: the number predicted the leaderboard. None until a ledger row has a leaderboard score
    (``python -m fh_utils ledger NAME SCORE``).
    """
    scored = ledger.dropna(subset=["leaderboard"]) if "leaderboard" in ledger else ledger.iloc[0:0]
    if scored.empty:
        return None
    fig = _figure(5.5, 5.0)
    ax = fig.subplots()
    lb = scored["leaderboard"].astype(float)
    est = pd.to_numeric(scored["estimate"], errors="coerce")
    low = pd.to_numeric(scored["estimate_low"], errors="coerce")
    high = pd.to_numeric(scored["estimate_high"], errors="coerce")
    ax.errorbar(lb, est, yerr=[(est - low).clip(lower=0), (high - est).clip(lower=0)], fmt="o", capsize=3,
                label="honest estimate (90 % interval)")  # fmt: skip
    ax.scatter(lb, pd.to_numeric(scored["best_epoch_score"], errors="coerce"), marker="x", color="tab:red",
               label="best val epoch (optimistic)")  # fmt: skip
    for x, y, name in zip(lb, est, scored["name"]):
        ax.annotate(str(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    values = pd.concat([lb, est.dropna(), high.dropna(), pd.to_numeric(scored["best_epoch_score"], errors="coerce")])
    lo, hi = float(values.min()) - 0.02, float(values.max()) + 0.02
    ax.plot([lo, hi], [lo, hi], color="gray", linewidth=0.8, linestyle="--")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="leaderboard score", ylabel="score the workbook reported",
           title="Did the reported number predict the leaderboard?")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    return fig
